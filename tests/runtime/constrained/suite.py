"""Constraints for the structured-generation tests: JSON schemas and regexes with prompts that
a small chat model can follow. Strings and arrays are bounded, so a greedy model that rambles
still ends inside max_new_tokens."""

from __future__ import annotations

NAME = {"type": "string", "minLength": 1, "maxLength": 24}

SCHEMAS: list[tuple[str, dict]] = [
    (
        "A person named Alice, aged 30.",
        {
            "type": "object",
            "properties": {"name": NAME, "age": {"type": "integer"}},
            "required": ["name", "age"],
        },
    ),
    (
        "The city of Paris in France.",
        {
            "type": "object",
            "properties": {"city": NAME, "country": NAME},
            "required": ["city", "country"],
        },
    ),
    (
        "A book: 'Dune' by Frank Herbert, 1965.",
        {
            "type": "object",
            "properties": {
                "title": NAME,
                "author": NAME,
                "year": {"type": "integer", "minimum": 1000, "maximum": 2100},
            },
            "required": ["title", "author", "year"],
        },
    ),
    (
        "A traffic light that is red.",
        {
            "type": "object",
            "properties": {"color": {"type": "string", "enum": ["red", "yellow", "green"]}},
            "required": ["color"],
        },
    ),
    (
        "Three fruits.",
        {
            "type": "object",
            "properties": {
                "fruits": {"type": "array", "items": NAME, "minItems": 1, "maxItems": 3}
            },
            "required": ["fruits"],
        },
    ),
    (
        "A product that costs 9.99 dollars.",
        {
            "type": "object",
            "properties": {"product": NAME, "price": {"type": "number", "minimum": 0}},
            "required": ["product", "price"],
        },
    ),
    (
        "Is the sky blue?",
        {
            "type": "object",
            "properties": {"answer": {"type": "boolean"}},
            "required": ["answer"],
        },
    ),
    (
        "A user with an id and an optional nickname.",
        {
            "type": "object",
            "properties": {
                "id": {"type": "integer", "minimum": 1, "maximum": 99999},
                "nickname": NAME,
            },
            "required": ["id"],
        },
    ),
    (
        "An address: 12 Main Street, Springfield.",
        {
            "type": "object",
            "properties": {
                "address": {
                    "type": "object",
                    "properties": {
                        "number": {"type": "integer", "minimum": 0, "maximum": 9999},
                        "street": NAME,
                        "town": NAME,
                    },
                    "required": ["number", "street", "town"],
                }
            },
            "required": ["address"],
        },
    ),
    (
        "A US zip code.",
        {
            "type": "object",
            "properties": {"zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["zip"],
        },
    ),
    (
        "A rating from 1 to 5 stars for a good film.",
        {
            "type": "object",
            "properties": {
                "film": NAME,
                "stars": {"type": "integer", "minimum": 1, "maximum": 5},
            },
            "required": ["film", "stars"],
        },
    ),
    (
        "Two points with x and y coordinates.",
        {
            "type": "object",
            "properties": {
                "points": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                        "required": ["x", "y"],
                    },
                    "minItems": 2,
                    "maxItems": 2,
                }
            },
            "required": ["points"],
        },
    ),
    (
        "A task that is done, with high priority.",
        {
            "type": "object",
            "properties": {
                "task": NAME,
                "done": {"type": "boolean"},
                "priority": {"type": "string", "enum": ["low", "medium", "high"]},
            },
            "required": ["task", "done", "priority"],
        },
    ),
    (
        "An email address for Bob.",
        {
            "type": "object",
            "properties": {
                "email": {"type": "string", "pattern": "^[a-z]{1,10}@[a-z]{1,10}\\.com$"}
            },
            "required": ["email"],
        },
    ),
    (
        "The temperature today in Celsius.",
        {
            "type": "object",
            "properties": {"celsius": {"type": "integer", "minimum": -50, "maximum": 50}},
            "required": ["celsius"],
        },
    ),
    (
        "A list of up to four primary colors.",
        {
            "type": "array",
            "items": {"type": "string", "enum": ["red", "blue", "yellow", "green"]},
            "minItems": 1,
            "maxItems": 4,
        },
    ),
    (
        "A pet: a dog named Rex, 3 years old, vaccinated.",
        {
            "type": "object",
            "properties": {
                "species": {"type": "string", "enum": ["dog", "cat", "bird"]},
                "name": NAME,
                "age": {"type": "integer", "minimum": 0, "maximum": 40},
                "vaccinated": {"type": "boolean"},
            },
            "required": ["species", "name", "age", "vaccinated"],
        },
    ),
    (
        "A meeting at 10:30.",
        {
            "type": "object",
            "properties": {
                "title": NAME,
                "time": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"},
            },
            "required": ["title", "time"],
        },
    ),
    (
        "A team of two people with names and roles.",
        {
            "type": "object",
            "properties": {
                "team": NAME,
                "members": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"name": NAME, "role": NAME},
                        "required": ["name", "role"],
                    },
                    "minItems": 1,
                    "maxItems": 2,
                },
            },
            "required": ["team", "members"],
        },
    ),
    (
        "A server status: online, 99.9 percent uptime, optional note.",
        {
            "type": "object",
            "properties": {
                "status": {"type": "string", "enum": ["online", "offline"]},
                "uptime": {"type": "number", "minimum": 0, "maximum": 100},
                "note": NAME,
            },
            "required": ["status", "uptime"],
        },
    ),
]

REGEXES: list[tuple[str, str]] = [
    ("Answer yes or no: is water wet?", r"(yes|no)"),
    ("A US phone number:", r"\(\d{3}\) \d{3}-\d{4}"),
    ("Today's date in ISO format:", r"20\d{2}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"),
    ("An IPv4 address:", r"((25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(25[0-5]|2[0-4]\d|1?\d?\d)"),
    ("An email address:", r"[a-z]{1,12}@[a-z]{1,12}\.(com|org|net)"),
    ("A time of day:", r"([01]\d|2[0-3]):[0-5]\d"),
    ("A hex color code:", r"#[0-9a-f]{6}"),
    ("A positive integer under 1000:", r"[1-9]\d{0,2}"),
    ("A price in dollars:", r"\$\d{1,4}\.\d{2}"),
    ("The capital of France, in capitals:", r"[A-Z]{2,10}"),
    ("A US zip code:", r"\d{5}(-\d{4})?"),
    ("A percentage:", r"(100|[1-9]?\d)%"),
    ("A version number:", r"v\d{1,2}\.\d{1,2}\.\d{1,2}"),
    ("A weekday:", r"(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"),
    ("A temperature:", r"-?\d{1,2}(\.\d)? ?°C"),
    ("A short greeting:", r"(Hello|Hi|Hey), [A-Z][a-z]{1,10}!"),
    ("A URL:", r"https://[a-z]{2,12}\.(com|org)/[a-z]{1,10}"),
    ("A list of three digits separated by commas:", r"\d, \d, \d"),
    ("A product code:", r"[A-Z]{3}-\d{4}"),
    ("A sentence of at most eight words ending with a period:", r"[A-Z][a-z]*( [a-z]+){0,7}\."),
]
