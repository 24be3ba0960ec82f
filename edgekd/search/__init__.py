"""Training-free student search: spaces, proxies and the search loop."""

from edgekd.search.proxies import PROXIES
from edgekd.search.search import SearchConfig, search
from edgekd.search.spaces import SPACES, build_student

__all__ = ["PROXIES", "SPACES", "SearchConfig", "build_student", "search"]
