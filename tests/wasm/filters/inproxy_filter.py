"""A plain-Python proxy-wasm filter (no envoykit import): the end-to-end probe for the Wasm build.

- every request gets ``x-python-filter: <plugin configuration>``;
- ``/deny`` is answered with a local 403 from inside the VM;
- ``/raise`` raises, which the shim turns into a 500 (fail closed).
"""

import _envoykit_host as host

REQUEST_HEADERS = 0
RESPONSE_HEADERS = 2
CONTINUE = 0
STOP_ITERATION = 1

_config = b""


def on_configure(config: bytes) -> bool:
    global _config
    _config = config
    print("inproxy_filter configured:", config.decode())  # stdout goes to Envoy's log (info)
    return True


def on_request_headers(context_id: int, num_headers: int, end_of_stream: int) -> int:
    headers = dict(host.get_header_map_pairs(REQUEST_HEADERS))
    path = headers.get(b":path", b"")
    if path.startswith(b"/deny"):
        host.send_local_response(403, b"denied by python\n", [(b"x-denied-by", b"python")])
        return STOP_ITERATION
    if path.startswith(b"/raise"):
        raise RuntimeError("boom from python")
    host.replace_header(REQUEST_HEADERS, b"x-python-filter", _config)
    host.replace_header(REQUEST_HEADERS, b"x-python-header-count", str(num_headers).encode())
    return CONTINUE


def on_response_headers(context_id: int, num_headers: int, end_of_stream: int) -> int:
    host.replace_header(RESPONSE_HEADERS, b"x-python-response", b"seen")
    return CONTINUE
