"""Word lists the false-hit guards read: general English, written by hand, not mined from a benchmark.

Everything here is data. `text.py` turns a prompt into features with these lists and `guards.py`
compares two prompts' features; neither holds a word list of its own.
"""

from __future__ import annotations

__all__ = [
    "ANTONYMS",
    "CONTRACTIONS",
    "CURRENCY_WORDS",
    "FILLERS",
    "GREETINGS",
    "NEGATING_PREFIXES",
    "NEGATORS",
    "NUMBER_WORDS",
    "ORDINAL_WORDS",
    "PHRASES",
    "PRONOUN_CLASSES",
    "ROLE_PREPOSITIONS",
    "SIGNOFFS",
    "SOFT_WORDS",
    "STOPWORDS",
    "SYNONYM_GROUPS",
    "TEMPORAL_WORDS",
]

# Contractions, applied to lower-cased text before tokenising (order matters: specific first).
CONTRACTIONS: tuple[tuple[str, str], ...] = (
    (r"\bwon't\b", "will not"),
    (r"\bcan't\b", "can not"),
    (r"\bshan't\b", "shall not"),
    (r"\bain't\b", "is not"),
    (r"\bcannot\b", "can not"),
    (r"n't\b", " not"),
    (r"'re\b", " are"),
    (r"'m\b", " am"),
    (r"'ve\b", " have"),
    (r"'ll\b", " will"),
    (r"'d\b", " would"),
    (r"\blet's\b", "let us"),
    (r"\b(what|that|it|there|here|who|where|how|when|why|he|she|which)'s\b", r"\1 is"),
    (r"\b(what|that|there|where|how|who)s\b", r"\1 is"),  # "whats", typed without the apostrophe
    (r"'s\b", ""),  # possessive: "Australia's capital" ~ "capital of Australia"
    (r"s'(?=\s|$)", "s"),
)

# Multi-word expressions rewritten to one token or a canonical phrase, applied to the token stream.
# They fold common ways of asking the same thing ("how can I" ~ "how do I") into one form.
PHRASES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("is", "it", "possible", "for", "me", "to"), ("can", "i")),
    (("is", "it", "possible", "to"), ("can", "i")),
    (("is", "it", "ok", "to"), ("can", "i")),
    (("is", "it", "okay", "to"), ("can", "i")),
    (("is", "it", "alright", "to"), ("can", "i")),
    (("am", "i", "able", "to"), ("can", "i")),
    (("am", "i", "allowed", "to"), ("can", "i")),
    (("would", "like", "to"), ("want", "to")),
    (("how", "can", "i"), ("how", "do", "i")),
    (("how", "could", "i"), ("how", "do", "i")),
    (("how", "would", "i"), ("how", "do", "i")),
    (("how", "can", "we"), ("how", "do", "we")),
    (("where", "can", "i"), ("where", "do", "i")),
    (("where", "could", "i"), ("where", "do", "i")),
    (("who", "should", "i"), ("who", "do", "i")),
    (("how", "much"), ("how_much",)),
    (("how", "many"), ("how_many",)),
    (("what", "is", "the", "price", "of"), ("how_much", "is")),
    (("what", "is", "the", "cost", "of"), ("how_much", "is")),
    (("what", "does", "it", "cost"), ("how_much", "does", "it", "cost")),
    (("what", "do", "you", "charge"), ("how_much", "do", "you", "charge")),
    (("set", "up"), ("setup",)),
    (("sign", "up"), ("register",)),
    (("log", "in"), ("login",)),
    (("sign", "in"), ("login",)),
    (("log", "on"), ("login",)),
    (("money", "back"), ("refund",)),
    (("cash", "machine"), ("atm",)),
    (("per", "cent"), ("percent",)),
    (("a", "lot", "of"), ("many",)),
    (("are", "there"), ("do", "you", "have")),
    (("is", "there"), ("do", "you", "have")),
)

# Greetings and sign-offs that carry no meaning at the edges of a prompt.
GREETINGS = frozenset({
    "hi", "hello", "hey", "hiya", "greetings", "morning", "afternoon", "evening", "good", "there",
    "team", "all", "folks", "everyone", "guys", "yo", "dear", "sir", "madam",
})
SIGNOFFS = frozenset({"thanks", "thank", "you", "cheers", "thx", "ta", "please", "pls", "much", "appreciated",
                      "in", "advance", "regards", "kind", "best"})

# Words that carry no content anywhere in a question.
FILLERS = frozenset({
    "um", "uh", "erm", "er", "hmm", "ah", "oh", "okay", "ok", "so", "like", "well", "just", "please",
    "kindly", "quick", "question", "basically", "actually", "honestly", "anyway", "anyways",
    "right", "wondering", "wonder",
})

STOPWORDS = frozenset({
    "a", "an", "the", "do", "does", "did", "doing", "is", "are", "am", "be", "been", "being", "it", "its",
    "of", "that", "this", "these", "those", "there", "here", "to", "and", "or", "but", "if", "as", "at",
    "by", "on", "in", "for", "with", "about", "me", "my", "i", "mine", "myself", "we", "us", "our", "ours",
    "would", "will", "shall", "have", "has", "had", "having", "got", "some", "any", "also", "too", "very",
    "really", "then", "than", "up", "into", "onto", "through", "via",
})
# Prepositions and particles are stopwords above only where they carry little: "turn on" / "turn off",
# "in" / "out", "with" / "without" are kept meaningful by NEGATORS and ANTONYMS, which are checked first.

# Words whose presence on one side only is tolerated when the prompts are otherwise very close.
SOFT_WORDS = frozenset({
    "usually", "normally", "typically", "generally", "currently", "exactly", "roughly", "approximately",
    "still", "ever", "even", "now", "again", "please", "what", "which", "how_much", "can", "could",
    "possible", "able", "should", "need", "want", "know", "tell", "find", "out", "way", "best",
    "kind", "sort", "type", "option", "options", "available", "offer", "provide", "you", "your",
    "get", "go", "going", "make", "let",
})

NEGATORS = frozenset({"not", "no", "never", "without", "non", "neither", "nor", "none", "nothing", "nobody",
                      "nowhere"})
NEGATING_PREFIXES = ("un", "non", "dis", "in", "im", "il", "ir", "de", "anti", "mis")

# Pronouns fold to who they refer to: "my account" ~ "our account", but never ~ "his account".
PRONOUN_CLASSES: dict[str, str] = {
    **dict.fromkeys(("i", "me", "my", "mine", "myself", "we", "us", "our", "ours", "ourselves"), "@self"),
    **dict.fromkeys(("you", "your", "yours", "yourself", "yourselves"), "@you"),
    **dict.fromkeys(("he", "him", "his", "himself"), "@he"),
    **dict.fromkeys(("she", "her", "hers", "herself"), "@she"),
    **dict.fromkeys(("they", "them", "their", "theirs", "themselves"), "@they"),
}

# Prepositions whose object fixes a role: "London to Paris" is not "Paris to London".
ROLE_PREPOSITIONS = frozenset({"to", "from", "into", "onto", "than", "vs", "versus", "against", "between",
                               "over", "under", "towards", "toward"})

NUMBER_WORDS: dict[str, float] = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
    "thousand": 1000, "million": 1e6, "billion": 1e9, "dozen": 12, "half": 0.5, "single": 1,
    "double": 2, "twice": 2, "triple": 3, "quarter": 0.25, "fortnight": 14,
}
ORDINAL_WORDS: dict[str, float] = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13, "fourteenth": 14,
    "fifteenth": 15, "twentieth": 20, "thirtieth": 30,
}
CURRENCY_WORDS: dict[str, str] = {
    "£": "@gbp", "pound": "@gbp", "pounds": "@gbp", "gbp": "@gbp", "quid": "@gbp", "sterling": "@gbp",
    "$": "@usd", "dollar": "@usd", "dollars": "@usd", "usd": "@usd", "bucks": "@usd",
    "€": "@eur", "euro": "@eur", "euros": "@eur", "eur": "@eur",
    "%": "@percent", "percent": "@percent", "percentage": "@percent",
}

TEMPORAL_WORDS: dict[str, str] = {
    **{d + s: d for d in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
       for s in ("", "s")},
    **{m: m for m in ("january", "february", "march", "april", "june", "july", "august", "september",
                      "october", "november", "december")},
    "jan": "january", "feb": "february", "sept": "september", "oct": "october", "nov": "november",
    "dec": "december",
    "today": "today", "tonight": "tonight", "tomorrow": "tomorrow", "yesterday": "yesterday",
    "weekend": "weekend", "weekends": "weekend", "weekday": "weekday", "weekdays": "weekday",
    "morning": "morning", "mornings": "morning", "afternoon": "afternoon", "afternoons": "afternoon",
    "evening": "evening", "evenings": "evening", "night": "night", "nights": "night",
    "overnight": "night", "midnight": "midnight", "midday": "noon", "noon": "noon",
    "am": "am", "pm": "pm", "christmas": "christmas", "easter": "easter", "spring": "spring",
    "summer": "summer", "autumn": "autumn", "winter": "winter", "daily": "daily", "weekly": "weekly",
    "monthly": "monthly", "yearly": "yearly", "annually": "yearly", "annual": "yearly",
    "fortnightly": "fortnightly", "hourly": "hourly",
}

# Words that mean the same in a request. Each group folds to its first word.
SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = (
    ("get", "obtain", "receive", "acquire"),
    ("buy", "purchase"),
    ("price", "cost", "charge", "fee", "pricing", "priced"),
    ("start", "begin", "commence"),
    ("fast", "quick", "rapid", "speedy", "fastest", "quickest", "faster", "quicker", "quickly"),
    ("big", "large", "bigger", "larger", "biggest", "largest"),
    ("small", "little", "tiny", "smaller", "smallest"),
    ("help", "assist", "assistance"),
    ("change", "alter", "modify", "amend", "switch"),
    ("delete", "remove", "erase"),
    ("show", "display"),
    ("find", "locate"),
    ("need", "require", "requirement"),
    ("want", "wish"),
    ("can", "could", "may", "able", "possible", "allowed", "permitted", "permission"),
    ("repair", "fix", "mend"),
    ("broken", "faulty", "damaged", "defective"),
    ("shop", "store"),
    ("kid", "child", "children", "kids"),
    ("baby", "infant"),
    ("car", "vehicle", "automobile"),
    ("phone", "telephone"),
    ("doctor", "gp", "physician"),
    ("holiday", "vacation"),
    ("luggage", "baggage"),
    ("flat", "apartment"),
    ("delivery", "shipping", "postage", "deliver", "ship"),
    ("reply", "respond", "answer"),
    ("ask", "enquire", "inquire"),
    ("enquiry", "inquiry", "query"),
    ("tell", "inform"),
    ("book", "reserve", "booking", "reservation"),
    ("submit", "send", "lodge"),
    ("create", "setup", "establish"),
    ("choose", "select", "pick"),
    ("atm", "cashpoint"),
    ("money", "funds", "cash"),
    ("quote", "quotation", "estimate"),
    ("nearest", "closest"),
    ("contact", "reach"),
    ("bill", "invoice"),
    ("home", "house"),
    ("employer", "boss"),
    ("end", "terminate", "cancel"),
    ("what", "which"),
    ("rule", "regulation"),
    ("cheap", "inexpensive", "affordable"),
    ("expensive", "costly", "pricey"),
    ("correct", "right", "proper"),
    ("mistake", "error"),
    ("problem", "issue", "trouble"),
    ("instruction", "direction", "guidance"),
    ("order", "ordered"),
    ("attach", "add"),
)

# Pairs of words of opposite sense, for naming why two prompts differ (any unmatched word blocks a hit;
# these make the reason "negation" instead of "content").
ANTONYMS: tuple[tuple[str, str], ...] = (
    ("open", "close"), ("open", "closed"), ("on", "off"), ("in", "out"), ("up", "down"),
    ("add", "remove"), ("include", "exclude"), ("allow", "ban"), ("allow", "forbid"),
    ("allow", "prohibit"), ("allowed", "banned"), ("accept", "reject"), ("accept", "decline"),
    ("accept", "refuse"), ("increase", "decrease"), ("increase", "reduce"), ("raise", "lower"),
    ("more", "less"), ("more", "fewer"), ("most", "least"), ("maximum", "minimum"), ("max", "min"),
    ("before", "after"), ("early", "late"), ("start", "stop"), ("start", "end"), ("enable", "disable"),
    ("activate", "deactivate"), ("lock", "unlock"), ("subscribe", "unsubscribe"),
    ("connect", "disconnect"), ("safe", "unsafe"), ("safe", "dangerous"), ("legal", "illegal"),
    ("possible", "impossible"), ("advantage", "disadvantage"), ("benefit", "drawback"), ("pro", "con"),
    ("buy", "sell"), ("lend", "borrow"), ("give", "take"), ("send", "receive"), ("import", "export"),
    ("upload", "download"), ("win", "lose"), ("pass", "fail"), ("hot", "cold"), ("high", "low"),
    ("cheap", "expensive"), ("best", "worst"), ("good", "bad"), ("right", "wrong"), ("true", "false"),
    ("arrive", "depart"), ("arrival", "departure"), ("deposit", "withdraw"), ("credit", "debit"),
    ("profit", "loss"), ("join", "leave"), ("hire", "fire"), ("upgrade", "downgrade"), ("first", "last"),
    ("next", "previous"), ("old", "new"), ("young", "old"), ("long", "short"), ("above", "below"),
    ("over", "under"), ("inside", "outside"), ("internal", "external"), ("domestic", "international"),
    ("public", "private"), ("full", "empty"), ("with", "without"), ("mandatory", "optional"),
    ("compulsory", "optional"), ("required", "optional"), ("within", "after"), ("eat", "avoid"),
    ("take", "avoid"), ("suitable", "unsuitable"), ("refundable", "nonrefundable"), ("cover", "exclude"),
    ("spicy", "mild"), ("male", "female"), ("adult", "child"), ("full", "part"),
)
