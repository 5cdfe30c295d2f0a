/* Edge cases for the host: a path that pauses forever, one that pauses then resumes with
 * proxy_continue_stream, and one that calls an import the host does not implement. */
#include "proxy_wasm.h"

IMPORT(proxy_continue_stream) int proxy_continue_stream(int stream_type);
IMPORT(proxy_dispatch_http_call)
int proxy_dispatch_http_call(const char *upstream, size_t upstream_len, const char *headers, size_t headers_len,
                             const char *body, size_t body_len, const char *trailers, size_t trailers_len,
                             uint32_t timeout_ms, uint32_t *token);

IMPORT(proxy_set_property) int proxy_set_property(const char *path, size_t path_len, const char *value, size_t len);
IMPORT(proxy_get_header_map_pairs) int proxy_get_header_map_pairs(int map, char **data, size_t *len);
IMPORT(proxy_set_header_map_pairs) int proxy_set_header_map_pairs(int map, const char *data, size_t len);
IMPORT(proxy_set_tick_period_milliseconds) int proxy_set_tick_period_milliseconds(uint32_t period);

static uint32_t ticks;

EXPORT(proxy_on_configure) int proxy_on_configure(uint32_t root_id, size_t size) {
  proxy_define_metric(METRIC_COUNTER, "misc_ticks", 10, &ticks);
  return proxy_set_tick_period_milliseconds(250) == 0;
}

EXPORT(proxy_on_tick) void proxy_on_tick(uint32_t root_id) { proxy_increment_metric(ticks, 1); }

/* Round-trips the whole request map through get/set pairs, then reports its size. */
static void round_trip_pairs(void) {
  char *data = NULL;
  size_t len = 0;
  if (proxy_get_header_map_pairs(MAP_REQUEST_HEADERS, &data, &len) != 0) return;
  uint32_t count = 0;
  memcpy(&count, data, 4);
  proxy_set_header_map_pairs(MAP_REQUEST_HEADERS, data, len);
  free(data);
  char text[16] = "0";
  for (int i = 0; count && i < 1; i++) text[0] = '0' + (count % 10);
  add_header(MAP_REQUEST_HEADERS, "x-pairs-mod10", text);
}

EXPORT(proxy_on_request_headers) int proxy_on_request_headers(uint32_t ctx, uint32_t n, int eos) {
  char *path = get_header(MAP_REQUEST_HEADERS, ":path");
  int action = ACTION_CONTINUE;
  if (path && strcmp(path, "/pause") == 0) action = ACTION_PAUSE;
  if (path && strcmp(path, "/resume") == 0) {
    add_header(MAP_REQUEST_HEADERS, "x-resumed", "1");
    proxy_continue_stream(0);
    action = ACTION_PAUSE;
  }
  if (path && strcmp(path, "/pairs") == 0) round_trip_pairs();
  if (path && strcmp(path, "/prop") == 0) {
    proxy_set_property("misc\0note", 9, "hello", 5);
    char *value = NULL;
    size_t len = 0;
    if (proxy_get_property("misc\0note", 9, &value, &len) == 0) {
      proxy_add_header_map_value(MAP_REQUEST_HEADERS, "x-prop", 6, value, len);
      free(value);
    }
  }
  if (path && strcmp(path, "/call") == 0) {
    uint32_t token = 0;
    proxy_dispatch_http_call("c", 1, "", 0, "", 0, "", 0, 1000, &token);
  }
  free(path);
  return action;
}
