"""A small configuration base: attributes from keyword arguments, ``config.json`` in and out.

Unknown keys found in a released ``config.json`` (``auto_map``, ``transformers_version``…) are kept, so a
config loaded and saved again keeps them.
"""

import copy
import json
import os

CONFIG_NAME = "config.json"


class PretrainedConfig:
    model_type = ""

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
            raise FileNotFoundError(f"no {CONFIG_NAME} at {path!r}; pass the folder of a released or saved model") from None
        except ValueError as e:
            raise ValueError(f"{path} is not valid JSON ({e})") from e
        config_dict.update(overrides)
        return cls.from_dict(config_dict)

    def to_dict(self):
        out = copy.deepcopy(self.__dict__)
        out["model_type"] = self.model_type
        return out

    def save_pretrained(self, directory):
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, CONFIG_NAME)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)

    def __repr__(self):
        return f"{type(self).__name__} {json.dumps(self.to_dict(), indent=2, sort_keys=True)}"
