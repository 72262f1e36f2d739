"""The one reader of YAML from user paths (training configs, a run's ``args.yaml``): :class:`ConfigLoader`.

A ``yaml.SafeLoader`` (no Python tags, so no code runs) that also refuses a key given twice, reads numbers as the
command line does, and refuses aliases, whose nesting multiplies a few bytes into gigabytes once the values are
walked; and :func:`safe_dump`, which writes no alias, so what the package writes reads back. Needs PyYAML (the
``train`` extra).
"""
import io
import os
import re
from typing import Any, Dict, Union

import yaml

from .errors import UsageError
from .io import read_capped

__all__ = ['ConfigLoader', 'AliasInConfig', 'MAX_CONFIG_BYTES', 'load_config_file', 'safe_dump']


#: PyYAML's YAML 1.1 number forms less the base-60 ones (``epochs: 1:30`` was 90): such a value stays the string
#: written, which the flag's type check then names. Only forms YAML 1.1 read as numbers are numbers here, so a
#: string ``yaml.safe_dump`` left unquoted (``args.yaml``) still reads back as that string.
_NUMBER_RESOLVERS = {
    'tag:yaml.org,2002:int': re.compile(r'''^(?:[-+]?0b[0-1_]+
                    |[-+]?0[0-7_]+
                    |[-+]?(?:0|[1-9][0-9_]*)
                    |[-+]?0x[0-9a-fA-F_]+)$''', re.X),
    'tag:yaml.org,2002:float': re.compile(r'''^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
                    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$''', re.X),
}


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` refusing a key given twice in one mapping (plain YAML keeps the last silently, so
    ``lr: 0.1`` then ``lr: 5`` trained at 5), and reading numbers as written: no base-60 (``1:30``), and a leading
    zero is decimal as on the command line (``seed: 0777`` was octal 511; ``--seed 0777`` is 777)."""

    yaml_implicit_resolvers = {first: [(tag, _NUMBER_RESOLVERS.get(tag, regexp)) for tag, regexp in resolvers]
                               for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def construct_yaml_int(self, node):
        digits = self.construct_scalar(node).replace('_', '')
        if len(digits.lstrip('+-')) > 1 and digits.lstrip('+-')[0] == '0' and digits.lstrip('+-').isdigit():
            return int(digits, 10)
        return super().construct_yaml_int(node)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == 'tag:yaml.org,2002:merge':  # was "could not determine a constructor for the tag"
                raise yaml.constructor.ConstructorError(
                    None, None, f"'<<' (line {key_node.start_mark.line + 1}) is a YAML merge key: configs are read "
                                f"without merge keys, anchors and aliases; write the keys out", key_node.start_mark)
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):
                continue  # load_config names non-string keys itself
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' is given twice (line {key_node.start_mark.line + 1}): keep one",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor('tag:yaml.org,2002:int', UniqueKeyLoader.construct_yaml_int)

#: A config maps argument names to values: a few KiB. The cap stops a huge file before the YAML reader holds it (10 MB
#: took 36 s and 865 MB to be refused for an unknown key).
MAX_CONFIG_BYTES = 1 << 20


class AliasInConfig(UsageError, yaml.YAMLError):
    """A YAML alias (``*name``) in a config: refused, since aliases of aliases multiply a few hundred bytes into
    gigabytes (nine levels under ``mean:`` hung training while its memory grew)."""

    def __init__(self, event):
        super().__init__(f'*{event.anchor} (line {event.start_mark.line + 1})')


class ConfigLoader(UniqueKeyLoader):
    """:class:`UniqueKeyLoader` that refuses aliases (:class:`AliasInConfig`) before they are composed."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise AliasInConfig(self.peek_event())
        return super().compose_node(parent, index)


def load_config_file(path: Union[str, os.PathLike], what: str = 'Config') -> Dict[str, Any]:
    """The mapping of argument names to values in the YAML file ``path`` (a training config, a run's ``args.yaml``),
    read by :class:`ConfigLoader` within :data:`MAX_CONFIG_BYTES`; anything else (not UTF-8, an alias, not YAML,
    not a mapping, a key that is not a name) is one :class:`UsageError` line starting with ``what`` and the path."""
    path = os.fspath(path)
    stream = io.BytesIO(read_capped(path, what, MAX_CONFIG_BYTES, 'any training config'))
    stream.name = path  # the file that YAML's error marks name
    try:
        cfg = yaml.load(stream, Loader=ConfigLoader) or {}
    except yaml.reader.ReaderError as e:  # undecodable bytes, or a character YAML does not allow (NUL, ...)
        if e.encoding == 'unicode':  # decoded, then refused by PyYAML's printable check (e.character: its code)
            raise UsageError(f"{what} '{path}' holds the character U+{e.character:04X} (character {e.position}), "
                             f"which YAML does not allow (control characters, U+FFFE / U+FFFF): remove it.") from None
        raise UsageError(f"{what} '{path}' is not UTF-8 text (byte {e.position}: {e.reason}); save it as UTF-8.") \
            from e
    except AliasInConfig as e:
        raise UsageError(f"{what} '{path}' uses the YAML alias {e}: configs are read without anchors and aliases "
                         f"(nested ones multiply a few bytes into gigabytes); write the value out.") from None
    except yaml.YAMLError as e:
        raise UsageError(f"{what} '{path}' is not valid YAML: {' '.join(str(e).split())}") from e
    except RecursionError:  # PyYAML composes nodes recursively: [[[...]]] thousands deep
        raise UsageError(f"{what} '{path}' is nested too deeply for a YAML reader (lists / mappings inside each "
                         f"other thousands of levels deep): a config maps argument names to plain values.") \
            from None
    if not isinstance(cfg, dict):
        raise UsageError(f"{what} '{path}' must be a mapping of argument names to values.")
    names = [k for k in cfg if not isinstance(k, str)]
    if names:
        raise UsageError(f"{what} '{path}' has a key that is not a name ({names[0]!r}): keys are argument names "
                         f"such as lr or batch_size.")
    return cfg


class _PlainDumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that writes a value used twice out twice (no ``&id001`` / ``*id001``), so what it writes
    reads back through :class:`ConfigLoader`."""

    def ignore_aliases(self, data):
        return True


def safe_dump(data, stream=None):
    """``yaml.safe_dump`` without aliases (:class:`_PlainDumper`): a run's ``args.yaml`` is a config again."""
    return yaml.dump(data, stream, Dumper=_PlainDumper)
