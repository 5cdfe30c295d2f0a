/* Answers the path given as plugin configuration with a local 403 (body + header); an empty
 * configuration is rejected. Every response, local ones included, gets x-seen-response. */
#include "proxy_wasm.h"

static char deny_path[256];

EXPORT(proxy_on_configure) int proxy_on_configure(uint32_t root_id, size_t size) {
  if (size == 0 || size >= sizeof deny_path) {
    log_str(LOG_ERROR, "deny: configuration must be a path");
    return 0;
  }
  char *data = NULL;
  size_t len = 0;
  proxy_get_buffer_bytes(BUF_PLUGIN_CONFIG, 0, size, &data, &len);
  memcpy(deny_path, data, len);
  deny_path[len] = 0;
  free(data);
  return 1;
}

/* Header pairs for proxy_send_local_response: count, (key_len, value_len)*, "key\0value\0"*. */
static const char reply_headers[] = "\x01\x00\x00\x00"
                                    "\x0b\x00\x00\x00\x04\x00\x00\x00"
                                    "x-denied-by\0wasm\0";

EXPORT(proxy_on_request_headers) int proxy_on_request_headers(uint32_t ctx, uint32_t n, int eos) {
  char *path = get_header(MAP_REQUEST_HEADERS, ":path");
  int deny = path && strcmp(path, deny_path) == 0;
  free(path);
  if (!deny) return ACTION_CONTINUE;
  const char body[] = "denied\n";
  proxy_send_local_response(403, "wasm_deny", 9, body, sizeof body - 1, reply_headers, sizeof reply_headers - 1, -1);
  return ACTION_PAUSE;
}

EXPORT(proxy_on_response_headers) int proxy_on_response_headers(uint32_t ctx, uint32_t n, int eos) {
  add_header(MAP_RESPONSE_HEADERS, "x-seen-response", "1");
  return ACTION_CONTINUE;
}
