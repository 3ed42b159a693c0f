"""The ``key=value`` options of a ``DATA=`` spec, read one way for every source.

    shapes:seed=1,size=48          -> parse_options("seed=1,size=48", {"seed": int, "size": int}, spec)
    voc:PATH,classes=cat,dog       -> split_spec("PATH,classes=cat,dog") == ("PATH", "classes=cat,dog")
"""
from __future__ import annotations

import re

from common.errors import ConfigError


def split_spec(spec_rest: str) -> tuple[str, str]:
    """``PATH,key=value,...`` -> (PATH, "key=value,..."). Options start at the first ``,word=``, so a
    path may hold commas."""
    match = re.search(r",(?=[A-Za-z_]+=)", spec_rest)
    if not match:
        return spec_rest, ""
    return spec_rest[:match.start()], spec_rest[match.end():]


def parse_options(text: str, allowed: dict[str, type], spec: str, lists: tuple[str, ...] = ()) -> dict:
    """``key=v,key2=a,b,c`` -> {key: allowed[key]("v"), key2: [allowed[key2]("a"), ...]}.

    ``allowed`` maps each key to the type its value is converted to (int, str). A key in ``lists``
    takes the bare items that follow it, so ``classes=cat,dog`` reads as one list; an empty item
    there is kept ("") for the source to refuse with its own words. Elsewhere an empty item (a
    trailing comma) is ignored.

    Raises:
        ConfigError: an unknown key or stray bare item, a key given twice, a value of the wrong type.
    """
    opts: dict = {}
    key = None
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if sep and name in allowed:
            if name in opts:
                raise ConfigError(f"DATA={spec}: option {name} given twice")
            key = name
            opts[name] = [_convert(name, value, allowed, spec)] if name in lists else _convert(name, value, allowed, spec)
        elif not sep and key in lists:
            opts[key].append(_convert(key, item, allowed, spec))
        elif item:
            raise ConfigError(f"DATA={spec}: unknown option {item!r}; allowed: "
                              + ", ".join(f"{k}=A,B..." if k in lists else f"{k}=VALUE" for k in allowed))
    return opts


def _convert(key: str, value: str, allowed: dict[str, type], spec: str):
    try:
        return allowed[key](value)
    except ValueError:
        raise ConfigError(f"DATA={spec}: option {key} needs a {allowed[key].__name__}, got {value!r}") from None
