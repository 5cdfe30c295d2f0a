/* Adds a request header, removes one, replaces one; tags the response with the request path
 * it remembered per context (so per-context state is exercised). */
#include "proxy_wasm.h"

static char *paths[64];

EXPORT(proxy_on_configure) int proxy_on_configure(uint32_t root_id, size_t size) { return 1; }

EXPORT(proxy_on_request_headers) int proxy_on_request_headers(uint32_t ctx, uint32_t n, int eos) {
  add_header(MAP_REQUEST_HEADERS, "x-wasm-request", "added");
  proxy_remove_header_map_value(MAP_REQUEST_HEADERS, "x-remove-me", 11);
  proxy_replace_header_map_value(MAP_REQUEST_HEADERS, "user-agent", 10, "wasm-test", 9);
  paths[ctx % 64] = get_header(MAP_REQUEST_HEADERS, ":path");
  return ACTION_CONTINUE;
}

EXPORT(proxy_on_response_headers) int proxy_on_response_headers(uint32_t ctx, uint32_t n, int eos) {
  char *path = paths[ctx % 64];
  add_header(MAP_RESPONSE_HEADERS, "x-wasm-response", path ? path : "none");
  /* Are the request headers still readable in the response phase? (Envoy decides; the host must agree.) */
  char *again = get_header(MAP_REQUEST_HEADERS, ":path");
  add_header(MAP_RESPONSE_HEADERS, "x-request-headers-in-response", again ? "readable" : "gone");
  free(again);
  return ACTION_CONTINUE;
}

EXPORT(proxy_on_log) void proxy_on_log(uint32_t ctx) { log_str(LOG_DEBUG, "on_log"); }

EXPORT(proxy_on_delete) void proxy_on_delete(uint32_t ctx) {
  free(paths[ctx % 64]);
  paths[ctx % 64] = NULL;
}
