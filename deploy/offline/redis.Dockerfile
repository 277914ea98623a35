# Redis for the compose stack where no registry can be reached: Debian's redis-server package on a
# debootstrap base (deploy/offline/build.sh --with-redis makes the base and builds this).
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
USER redis
WORKDIR /var/lib/redis
EXPOSE 6379
HEALTHCHECK --interval=5s --timeout=3s --retries=10 CMD ["redis-cli", "ping"]
# Debian's binary keeps protected mode on by default (the official image turns it off): without a
# password it would refuse every client that is not on loopback.
CMD ["redis-server", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
