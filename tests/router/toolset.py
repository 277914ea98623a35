"""A realistic catalogue of 32 tools for the router's tests (more than the default threshold of 16)."""

from __future__ import annotations

from typing import Any

from gateway.intent import intent_text
from router import Narrowing, ToolRouter

_SPECS = [
    ("get_weather_forecast", "Get the weather forecast for a city for the coming days.", ["city", "days"]),
    ("get_stock_price", "Look up the latest trading price of a stock by its ticker symbol.", ["ticker"]),
    ("send_email", "Send an email message to a recipient with a subject and body.", ["to", "subject", "body"]),
    ("create_calendar_event", "Create an event in the user's calendar at a date and time.", ["title", "start"]),
    ("search_web", "Search the internet for pages matching a query.", ["query"]),
    ("translate_text", "Translate text from one language to another.", ["text", "target_language"]),
    ("book_flight", "Book a flight between two airports on a given date.", ["origin", "destination", "date"]),
    ("find_restaurants", "Find restaurants near a location, optionally by cuisine.", ["location", "cuisine"]),
    ("convert_currency", "Convert an amount of money from one currency to another.", ["amount", "from", "to"]),
    ("get_directions", "Get driving or walking directions between two places.", ["origin", "destination"]),
    ("play_music", "Play a song, album or artist on the music player.", ["track"]),
    ("set_alarm", "Set an alarm clock for a given time.", ["time"]),
    ("order_pizza", "Order a pizza for delivery with chosen toppings.", ["size", "toppings", "address"]),
    ("calculate_mortgage", "Calculate the monthly payment of a mortgage loan.", ["principal", "rate", "years"]),
    ("get_news_headlines", "Fetch today's top news headlines on a topic.", ["topic"]),
    ("reserve_hotel", "Reserve a hotel room in a city for check-in and check-out dates.", ["city", "checkin"]),
    ("track_package", "Track the delivery status of a parcel by its tracking number.", ["tracking_number"]),
    ("create_todo", "Add a task to the user's to-do list.", ["task"]),
    ("get_movie_showtimes", "List cinema showtimes for a film in a city.", ["movie", "city"]),
    ("check_bank_balance", "Check the balance of the user's bank account.", ["account_id"]),
    ("run_shell_command", "Execute a shell command on the user's computer.", ["command"]),
    ("solve_equation", "Solve an algebraic equation for a variable.", ["equation", "variable"]),
    ("get_recipe", "Find a cooking recipe for a dish.", ["dish"]),
    ("book_taxi", "Book a taxi ride to a destination.", ["pickup", "destination"]),
    ("lookup_definition", "Look up the dictionary definition of a word.", ["word"]),
    ("get_sports_scores", "Get the latest scores of a sports team's matches.", ["team"]),
    ("water_plants_reminder", "Remind the user to water their plants on a schedule.", ["schedule"]),
    ("get_exchange_hours", "Opening hours of a stock exchange.", ["exchange"]),
    ("resize_image", "Resize an image file to the given width and height.", ["path", "width", "height"]),
    ("get_air_quality", "Air quality index and pollution levels for a city.", ["city"]),
    ("schedule_meeting", "Schedule a video meeting with colleagues.", ["attendees", "time"]),
    ("compress_files", "Compress files into a zip archive.", ["paths"]),
]


def tools() -> list[dict[str, Any]]:
    """Fresh dicts on every call, as a parsed request body would give."""
    return [
        {
            "type": "function",
            "function": {
                "name": name,
                "description": description,
                "parameters": {
                    "type": "object",
                    "properties": {p: {"type": "string", "description": p.replace("_", " ")} for p in params},
                    "required": params[:1],
                },
            },
        }
        for name, description, params in _SPECS
    ]


def names(tool_list: list[dict[str, Any]]) -> list[str]:
    return [t["function"]["name"] for t in tool_list]


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def narrow(router: ToolRouter, tenant: str, tool_list: list[dict[str, Any]], messages: list[dict[str, Any]],
                 tool_choice: Any = None, query_vector: Any = None) -> Narrowing:
    """`router.narrow` with the intent text computed as the gateway computes it."""
    return await router.narrow(tenant, tool_list, messages, tool_choice, query_vector, intent=intent_text(messages))
