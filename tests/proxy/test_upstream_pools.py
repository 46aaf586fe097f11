"""The upstream client's pools: one per origin, the same ones requests itself would pick, and a
new one when the pool manager has dropped an origin's (its pools are bounded)."""

from requests.adapters import HTTPAdapter

from proxy.forwarding import prepared_request
from proxy.pinning import PinnedAdapter

URLS = [
    "http://127.0.0.1:8001/v1/chat/completions",
    "http://127.0.0.1:8001/other?q=1",
    "http://127.0.0.1:8002/v1",
    "http://[::1]:8003/v1/x",
    "https://example.com/v1",
    "https://example.com:8443",
    "HTTP://LOCALHOST/v1",
]


def pool_for(adapter: PinnedAdapter, url: str):
    return adapter.get_connection_with_tls_context(prepared_request("GET", url, {}, None), True, proxies={}, cert=None)


def test_each_origin_gets_the_pool_requests_itself_would_pick():
    adapter = PinnedAdapter(pool_connections=10, pool_maxsize=4, max_retries=0)
    for url in URLS:
        request = prepared_request("GET", url, {}, None)
        ours = pool_for(adapter, url)
        assert ours is HTTPAdapter.get_connection_with_tls_context(adapter, request, True, {}, None)
        assert adapter.request_url(request, {}) == HTTPAdapter.request_url(adapter, request, {})
    assert pool_for(adapter, URLS[0]) is pool_for(adapter, URLS[1])
    assert pool_for(adapter, URLS[0]) is not pool_for(adapter, URLS[2])
    assert (pool_for(adapter, URLS[4]).scheme, pool_for(adapter, URLS[4]).port) == ("https", 443)


def test_a_pool_the_manager_dropped_is_made_anew_and_kept_by_the_manager():
    adapter = PinnedAdapter(pool_connections=1, pool_maxsize=4, max_retries=0)  # room for one origin
    first = pool_for(adapter, URLS[0])
    pool_for(adapter, URLS[2])  # takes the only place: the first origin's pool is dropped
    again = pool_for(adapter, URLS[0])
    assert again is not first
    assert len(adapter.poolmanager.pools) == 1 and pool_for(adapter, URLS[0]) is again
