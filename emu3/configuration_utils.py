"""A small configuration base: attributes from keyword arguments, ``config.json`` in and out.

Unknown keys found in a released ``config.json`` (``auto_map``, ``transformers_version``…) are kept, so a
config loaded and saved again keeps them.
"""

import copy
import json
import os

from .atomic import atomic_write_json

CONFIG_NAME = "config.json"


class PretrainedConfig:
    model_type = ""
    # Field -> expected type, checked by ``type_problems`` ("64" or true for an int field is named, not used).
    field_types = {}

    def __init__(self, **kwargs):
        for key, value in kwargs.items():
            setattr(self, key, value)

    @classmethod
    def from_dict(cls, config_dict):
        return cls(**config_dict)

    @classmethod
    def from_pretrained(cls, directory, **overrides):
        path = directory if directory.endswith(".json") else os.path.join(directory, CONFIG_NAME)
        try:
            with open(path, encoding="utf-8") as f:
                config_dict = json.load(f)
        except FileNotFoundError:
            what = f"{path!r} does not exist; pass a {CONFIG_NAME} or" if path == directory else \
                f"no {CONFIG_NAME} at {path!r}; pass"
            raise FileNotFoundError(f"{what} the folder of a released or saved model") from None
        except ValueError as e:
            raise ValueError(f"{path} is not valid JSON ({e})") from e
        if not isinstance(config_dict, dict):
            raise ValueError(f"{path} must hold a JSON object of settings, got a JSON {type(config_dict).__name__}")
        config_dict.update(overrides)
        return cls.from_dict(config_dict)

    def type_problems(self):
        problems = []
        for name, kind in self.field_types.items():
            value = getattr(self, name, None)
            if value is None:
                continue
            ok = (isinstance(value, int) and not isinstance(value, bool)) if kind is int else \
                 (isinstance(value, (int, float)) and not isinstance(value, bool)) if kind is float else \
                 isinstance(value, kind)
            if not ok:
                expected = {int: "an integer", float: "a number", list: "a list", bool: "true or false"}.get(kind, kind)
                problems.append(f"{name} must be {expected}, got {value!r} ({type(value).__name__})")
        return problems

    def to_dict(self):
        out = copy.deepcopy(self.__dict__)
        out["model_type"] = self.model_type
        return out

    def save_pretrained(self, directory):
        os.makedirs(directory, exist_ok=True)
        atomic_write_json(os.path.join(directory, CONFIG_NAME), self.to_dict(), indent=2, sort_keys=True)

    def __repr__(self):
        return f"{type(self).__name__} {json.dumps(self.to_dict(), indent=2, sort_keys=True)}"
