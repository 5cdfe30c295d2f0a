/* Buffers the whole request body (StopIterationAndBuffer until end of stream), then replaces it
 * with its upper-cased copy wrapped in brackets. content-length is removed up front, as a real
 * filter that changes the body's length must. */
#include "proxy_wasm.h"

EXPORT(proxy_on_configure) int proxy_on_configure(uint32_t root_id, size_t size) { return 1; }

EXPORT(proxy_on_request_headers) int proxy_on_request_headers(uint32_t ctx, uint32_t n, int eos) {
  proxy_remove_header_map_value(MAP_REQUEST_HEADERS, "content-length", 14);
  return ACTION_CONTINUE;
}

EXPORT(proxy_on_request_body) int proxy_on_request_body(uint32_t ctx, size_t size, int eos) {
  if (!eos) return ACTION_PAUSE;
  char *data = NULL;
  size_t len = 0;
  if (proxy_get_buffer_bytes(BUF_REQUEST_BODY, 0, size, &data, &len) != 0) return ACTION_CONTINUE;
  char *out = malloc(len + 2);
  out[0] = '[';
  for (size_t i = 0; i < len; i++) out[i + 1] = (data[i] >= 'a' && data[i] <= 'z') ? data[i] - 32 : data[i];
  out[len + 1] = ']';
  proxy_set_buffer_bytes(BUF_REQUEST_BODY, 0, len, out, len + 2);
  free(out);
  free(data);
  return ACTION_CONTINUE;
}
