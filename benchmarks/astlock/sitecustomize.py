# Benchmark environment only: serialise ast.parse across threads (CPython 3.11.7 raises
# "AST constructor recursion depth mismatch" for concurrent parses), for old and new alike.
import ast
import threading

_lock = threading.RLock()
_parse = ast.parse


def _locked_parse(*args, **kwargs):
    with _lock:
        return _parse(*args, **kwargs)


ast.parse = _locked_parse
