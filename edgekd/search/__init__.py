"""Training-free student search: spaces, proxies and the search loop.

Calling the package runs ``search`` (``from edgekd import search`` gives this package: see
``edgekd.callable_module``).
"""

from edgekd.callable_module import make_callable
from edgekd.search.proxies import PROXIES
from edgekd.search.search import SearchConfig, search
from edgekd.search.spaces import SPACES, build_student

__all__ = ["PROXIES", "SPACES", "SearchConfig", "build_student", "search"]

make_callable(__name__, search)
