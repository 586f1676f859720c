"""Extracting structured data: a regex for a phone number, a JSON schema for a record."""

import json

from _backend import backend_from_args

import frontend_lang as sgl

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 32},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"type": "string", "maxLength": 32},
    },
    "required": ["name", "age", "city"],
}


@sgl.function
def extract(s, text):
    s += f"Text: {text}\n"
    s += "Phone number: " + sgl.gen("phone", regex=r"\(\d{3}\) \d{3}-\d{4}", temperature=0)
    s += "\nAs JSON: " + sgl.gen(
        "record", json_schema=json.dumps(SCHEMA), max_tokens=64, temperature=0
    )


if __name__ == "__main__":
    backend = backend_from_args(__doc__)
    state = extract.run(
        text="Maria Lopez, 41, lives in Seville; call her at (555) 123-4567.", backend=backend
    )
    print("phone:", state["phone"])
    print("record:", json.loads(state["record"]))
    backend.shutdown()
