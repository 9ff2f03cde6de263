"""``tool_call``: pick one of 3-4 offered tools and fill its arguments from the request.

The reference is an OpenAI-style ``tool_calls`` message; the model is asked for the JSON text
``{"name": ..., "arguments": {...}}`` (see :mod:`llmft.data.templates`). The rejected reply is
a plausible wrong call (a distractor tool, or one argument wrong), or, for about
:data:`MALFORMED_SHARE` of the rows, the right call written in a malformed way (see
:func:`_malformed`).

Case rule: exact. The JSON arguments are data, so strings compare case-sensitively
(``{"city": "paris"}`` is wrong for ``Paris``) and numbers numerically.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any, Callable

from llmft.data.tasks._common import Example, msg, rng
from llmft.data.templates import tool_call_text

CASE_RULE = "exact: JSON arguments are data; strings case-sensitive, numbers numerically"
MAX_NEW_TOKENS = 64
SYSTEM = "You can call tools. Answer every request with exactly one tool call."

CITIES = [
    "Paris", "London", "Tokyo", "Berlin", "Madrid", "Rome", "Lisbon", "Oslo", "Cairo", "Lima",
    "Toronto", "Chicago", "Seattle", "Sydney", "Dublin", "Vienna", "Prague", "Athens",
    "Nairobi", "Mumbai", "Seoul", "Boston", "Denver", "Warsaw", "Zurich", "Istanbul",
]
CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "INR"]
STOCKS = ["AAPL", "MSFT", "TSLA", "AMZN", "GOOG", "NVDA", "META", "NFLX", "IBM", "INTC"]
LANGUAGES = ["Spanish", "French", "German", "Italian", "Japanese", "Portuguese", "Dutch"]
PHRASES = [
    "good morning", "thank you", "where is the station", "see you tomorrow", "how are you",
    "happy birthday", "the bill please", "I am hungry", "good night", "nice to meet you",
]
PEOPLE = ["anna", "ben", "carla", "david", "emma", "felix", "grace", "hugo", "iris", "jack",
          "kate", "leo", "mia", "noah", "olga", "paul", "rosa", "sam", "tina", "victor"]
DOMAINS = ["example.com", "mail.com", "work.org"]
SUBJECTS = [
    "Lunch plans", "Meeting notes", "Project update", "Weekend trip", "Invoice",
    "Team dinner", "Quick question", "Schedule change", "Happy birthday", "Report draft",
]
RESTAURANTS = ["Luigi's", "Sakura", "The Oak", "Casa Bella", "Blue Fin", "Le Petit", "Spice Hub"]
TIMES = ["12:00", "12:30", "13:00", "18:00", "18:30", "19:00", "19:30", "20:00", "20:30"]
MONTH_DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


def _fn(name: str, description: str, props: dict) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": props, "required": list(props)},
        },
    }


# The tool pool (OpenAI function specs, kept terse so 3-4 of them fit a small prompt).
TOOLS: dict[str, dict] = {
    t["function"]["name"]: t
    for t in [
        _fn("get_weather", "Weather in a city.", {
            "city": {"type": "string"},
            "unit": {"type": "string"},
        }),
        _fn("convert_currency", "Convert money between currencies.", {
            "amount": {"type": "number"},
            "from": {"type": "string"},
            "to": {"type": "string"},
        }),
        _fn("set_timer", "Start a timer.", {"minutes": {"type": "integer"}}),
        _fn("send_email", "Send an email.", {
            "to": {"type": "string"},
            "subject": {"type": "string"},
        }),
        _fn("search_flights", "Find flights.", {
            "origin": {"type": "string"},
            "destination": {"type": "string"},
            "date": {"type": "string"},
        }),
        _fn("get_stock_price", "Latest stock price.", {"symbol": {"type": "string"}}),
        _fn("translate_text", "Translate text.", {
            "text": {"type": "string"},
            "language": {"type": "string"},
        }),
        _fn("book_table", "Book a restaurant table.", {
            "restaurant": {"type": "string"},
            "people": {"type": "integer"},
            "time": {"type": "string"},
        }),
    ]
}


def _tc_get_weather(r: random.Random) -> tuple[str, dict]:
    city, unit = r.choice(CITIES), r.choice(["celsius", "fahrenheit"])
    text = r.choice([
        "What's the weather in {c} in {u}?",
        "How warm is it in {c} right now? Use {u}.",
        "Tell me the current weather in {c}, in {u}.",
        "Weather for {c} please, {u}.",
    ]).format(c=city, u=unit)
    return text, {"city": city, "unit": unit}


def _tc_convert_currency(r: random.Random) -> tuple[str, dict]:
    amount = r.choice([r.randint(2, 99), r.randint(1, 50) * 10, r.randint(1, 20) * 100])
    src, dst = r.sample(CURRENCIES, 2)
    text = r.choice([
        "Convert {a} {f} to {t}.",
        "How much is {a} {f} in {t}?",
        "I have {a} {f}. What is that in {t}?",
        "Change {a} {f} into {t} for me.",
    ]).format(a=amount, f=src, t=dst)
    return text, {"amount": amount, "from": src, "to": dst}


def _tc_set_timer(r: random.Random) -> tuple[str, dict]:
    minutes = r.choice([r.randint(1, 15), r.randint(2, 12) * 5])
    text = r.choice([
        "Set a timer for {m} minutes.",
        "Start a {m} minute timer.",
        "Remind me in {m} minutes with a timer.",
        "Please time {m} minutes for me.",
    ]).format(m=minutes)
    return text, {"minutes": minutes}


def _tc_send_email(r: random.Random) -> tuple[str, dict]:
    to = f"{r.choice(PEOPLE)}@{r.choice(DOMAINS)}"
    subject = r.choice(SUBJECTS)
    text = r.choice([
        'Send an email to {t} with the subject "{s}".',
        'Email {t}, subject "{s}".',
        'Write to {t} with subject "{s}".',
        'Please mail {t} about "{s}".',
    ]).format(t=to, s=subject)
    return text, {"to": to, "subject": subject}


def _tc_search_flights(r: random.Random) -> tuple[str, dict]:
    origin, dest = r.sample(CITIES, 2)
    month = r.randint(1, 12)
    date = f"2025-{month:02d}-{r.randint(1, MONTH_DAYS[month - 1]):02d}"
    text = r.choice([
        "Find flights from {o} to {d} on {t}.",
        "Search flights {o} to {d}, date {t}.",
        "I need to fly from {o} to {d} on {t}.",
        "Any flights on {t} from {o} to {d}?",
    ]).format(o=origin, d=dest, t=date)
    return text, {"origin": origin, "destination": dest, "date": date}


def _tc_get_stock_price(r: random.Random) -> tuple[str, dict]:
    symbol = r.choice(STOCKS)
    text = r.choice([
        "What is the stock price of {s}?",
        "How is {s} trading right now?",
        "Get me the latest {s} share price.",
        "Quote for {s} please.",
    ]).format(s=symbol)
    return text, {"symbol": symbol}


def _tc_translate_text(r: random.Random) -> tuple[str, dict]:
    phrase, lang = r.choice(PHRASES), r.choice(LANGUAGES)
    text = r.choice([
        'Translate "{p}" into {l}.',
        'How do you say "{p}" in {l}?',
        'Put "{p}" in {l} for me.',
        'What is "{p}" in {l}?',
    ]).format(p=phrase, l=lang)
    return text, {"text": phrase, "language": lang}


def _tc_book_table(r: random.Random) -> tuple[str, dict]:
    restaurant, people, time = r.choice(RESTAURANTS), r.randint(1, 8), r.choice(TIMES)
    text = r.choice([
        "Book a table for {n} at {p} at {t}.",
        "Reserve {p} for {n} people at {t}.",
        "Get us a table at {p}, {n} people, {t}.",
        "Can you book {p} at {t} for {n}?",
    ]).format(n=people, p=restaurant, t=time)
    return text, {"restaurant": restaurant, "people": people, "time": time}


_REQUESTS: dict[str, Callable[[random.Random], tuple[str, dict]]] = {
    "get_weather": _tc_get_weather,
    "convert_currency": _tc_convert_currency,
    "set_timer": _tc_set_timer,
    "send_email": _tc_send_email,
    "search_flights": _tc_search_flights,
    "get_stock_price": _tc_get_stock_price,
    "translate_text": _tc_translate_text,
    "book_table": _tc_book_table,
}


def _perturb_args(r: random.Random, name: str, args: dict) -> dict:
    """The same call with exactly one argument value wrong (but plausible)."""
    bad = dict(args)
    key = r.choice(list(args))
    if name == "search_flights" and key in ("origin", "destination"):
        bad["origin"], bad["destination"] = args["destination"], args["origin"]
        return bad
    if name == "convert_currency" and key in ("from", "to"):
        bad["from"], bad["to"] = args["to"], args["from"]
        return bad
    value = args[key]
    if isinstance(value, int):
        bad[key] = value + r.choice([-2, -1, 1, 2, 10]) if value > 2 else value + r.randint(1, 3)
    elif key == "unit":
        bad[key] = "fahrenheit" if value == "celsius" else "celsius"
    elif key == "date":
        day = int(value[-2:])
        bad[key] = value[:-2] + f"{day + 1 if day < 28 else day - 1:02d}"
    else:
        pools = {
            "city": CITIES, "symbol": STOCKS, "language": LANGUAGES, "text": PHRASES,
            "subject": SUBJECTS, "restaurant": RESTAURANTS, "time": TIMES,
            "to": [f"{p}@{d}" for p in PEOPLE for d in DOMAINS],
        }
        bad[key] = r.choice([v for v in pools[key] if v != value])
    return bad



def _call_message(name: str, arguments: dict) -> dict:
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": name, "arguments": dict(arguments)}}],
    }


# --- malformed rejected calls ---------------------------------------------------------------

# Share of rows whose rejected reply is the reference call, malformed. Set to 0 to generate the
# suite as it was before malformed calls were added (the chat rows are the same either way).
MALFORMED_SHARE = 0.3


def _call_json(name: str, args: dict) -> str:
    return tool_call_text({"name": name, "arguments": args})


# Ways a small model garbles a call. Each keeps the right tool and arguments, so the rejected
# reply differs from the chosen one only in its form: a preference pair that teaches the format.
MALFORMATIONS: dict[str, Callable[[str, dict], str]] = {
    # generation stopped before the closing braces
    "truncated": lambda name, args: _call_json(name, args).rstrip("}"),
    # Python-dict style quotes are not JSON
    "single_quoted": lambda name, args: _call_json(name, args).replace('"', "'"),
    # arguments as a string that is not JSON (a JSON-encoded string would be accepted)
    "string_arguments": lambda name, args: json.dumps(
        {"name": name, "arguments": ", ".join(f"{k}={v}" for k, v in args.items())}, ensure_ascii=False
    ),
    # the arguments spilled into the call object, no "arguments" key
    "missing_arguments": lambda name, args: json.dumps({"name": name, **args}, ensure_ascii=False),
}


def _malformed(split: str, request: str, name: str, args: dict) -> dict | None:
    """For about :data:`MALFORMED_SHARE` of the rows, the reference call in one of the
    :data:`MALFORMATIONS`, as a plain-content assistant message (it renders as that raw text);
    else None.

    Drawn from its own RNG, seeded by the request (unique per row: the splits are deduplicated by
    conversation and answer), never from the generator's stream, so that adding it left every
    chat row, and so the chat and prompt files, byte for byte as they were.
    """
    r = rng("tool_call", split, f"malformed:{request}")
    if r.random() >= MALFORMED_SHARE:
        return None
    return msg("assistant", MALFORMATIONS[r.choice(list(MALFORMATIONS))](name, args))


def generate(r: random.Random, split: str) -> Example:
    name = r.choice(list(TOOLS))
    # 3 tools offered in three rows out of four, 4 in the rest (the specs dominate the length)
    distractors = r.sample([n for n in TOOLS if n != name], r.choice([2, 2, 2, 3]))
    offered = distractors + [name]
    r.shuffle(offered)
    text, args = _REQUESTS[name](r)
    if r.random() < 0.25:  # a plausible wrong tool, with arguments of its own
        wrong = r.choice(distractors)
        rejected = _call_message(wrong, _REQUESTS[wrong](r)[1])
    else:
        rejected = _call_message(name, _perturb_args(r, name, args))
    return Example(
        prompt=[msg("system", SYSTEM), msg("user", text)],
        final=_call_message(name, args),
        rejected=_malformed(split, text, name, args) or rejected,
        tools=[TOOLS[n] for n in offered],
    )


# --- verifier -------------------------------------------------------------------------------

_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*|\s*```$")


def _first_json_object(text: str) -> Any:
    """The first JSON value starting at a ``{`` (or ``[``) that parses, else None."""
    text = _FENCE.sub("", text.strip())
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                value, _ = decoder.raw_decode(text, i)
            except ValueError:
                continue
            return value
    return None


def _as_call(value: Any) -> dict | None:
    """Normalise ``{"name", "arguments"}``, OpenAI ``{"type", "function": {...}}`` and
    ``{"tool_calls": [...]}`` / ``[call, ...]`` shapes to ``{"name", "arguments": dict}``."""
    for _ in range(4):
        if isinstance(value, list):
            value = value[0] if value else None
        elif isinstance(value, dict) and "tool_calls" in value:
            value = value["tool_calls"]
        elif isinstance(value, dict) and isinstance(value.get("function"), dict):
            value = value["function"]
        else:
            break
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    args = value.get("arguments", value.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return {"name": value["name"], "arguments": args}


def _json_equal(a: Any, b: Any) -> bool:
    """Structural equality with numbers compared numerically (booleans are not numbers)."""
    a_num = isinstance(a, (int, float)) and not isinstance(a, bool)
    b_num = isinstance(b, (int, float)) and not isinstance(b, bool)
    if a_num or b_num:
        return a_num and b_num and float(a) == float(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def verify(prediction: str, answer: str) -> bool:
    """Same tool name and arguments; argument strings are case-sensitive (an API call's
    arguments are data), numbers compare numerically."""
    got = _as_call(_first_json_object(prediction))
    ref = _as_call(json.loads(answer))
    return got is not None and ref is not None and _json_equal(got, ref)

