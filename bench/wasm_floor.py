"""The floor of Python in Envoy (``wasm-floor`` scenario): envoykit's C shim and CPython with two
request/response header callbacks that return Continue, and no SDK at all.

Its cost against no filter is what any Python filter pays to exist inside Envoy: V8 running the
interpreter for two calls per request. The ``wasm-noop`` scenario minus this one is what the
SDK's in-proxy runtime and chain engine add on top.
"""


def on_configure(configuration: bytes) -> bool:
    return True


def on_request_headers(context_id: int, num_headers: int, end_of_stream: int) -> int:
    return 0


def on_response_headers(context_id: int, num_headers: int, end_of_stream: int) -> int:
    return 0
