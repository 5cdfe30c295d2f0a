/* Uses the host's side services: a counter, a gauge and a histogram; shared data updated with
 * compare-and-swap; properties (source.address, xds.route_name); the clock; logs per level. */
#include <stdio.h>
#include "proxy_wasm.h"

static uint32_t requests, inflight, path_len;

static int define(int type, const char *name, uint32_t *id) { return proxy_define_metric(type, name, strlen(name), id); }

EXPORT(proxy_on_configure) int proxy_on_configure(uint32_t root_id, size_t size) {
  define(METRIC_COUNTER, "wasmtest_requests", &requests);
  define(METRIC_GAUGE, "wasmtest_inflight", &inflight);
  define(METRIC_HISTOGRAM, "wasmtest_path_len", &path_len);
  log_str(LOG_INFO, "observe: configured");
  return 1;
}

static void copy_property(const char *path, size_t path_len, const char *header) {
  char *value = NULL;
  size_t len = 0;
  if (proxy_get_property(path, path_len, &value, &len) != 0) {
    add_header(MAP_REQUEST_HEADERS, header, "missing");
    return;
  }
  proxy_add_header_map_value(MAP_REQUEST_HEADERS, header, strlen(header), value, len);
  free(value);
}

/* Add one to the shared counter "hits", retrying on a CAS mismatch; returns the new value. */
static long bump_hits(void) {
  for (int attempt = 0; attempt < 5; attempt++) {
    char *value = NULL;
    size_t len = 0;
    uint32_t cas = 0;
    long hits = 0;
    if (proxy_get_shared_data("hits", 4, &value, &len, &cas) == 0) {
      char buf[32] = {0};
      memcpy(buf, value, len < 31 ? len : 31);
      hits = strtol(buf, NULL, 10);
      free(value);
    }
    char out[32];
    int n = snprintf(out, sizeof out, "%ld", hits + 1);
    if (proxy_set_shared_data("hits", 4, out, n, cas) == 0) return hits + 1;
  }
  return -1;
}

EXPORT(proxy_on_request_headers) int proxy_on_request_headers(uint32_t ctx, uint32_t n, int eos) {
  proxy_increment_metric(requests, 1);
  proxy_increment_metric(inflight, 1);
  copy_property("source\0address", 14, "x-source-address");
  copy_property("xds\0route_name", 14, "x-route-name");
  char hits[32];
  snprintf(hits, sizeof hits, "%ld", bump_hits());
  add_header(MAP_REQUEST_HEADERS, "x-hits", hits);
  uint64_t now = 0;
  proxy_get_current_time_nanoseconds(&now);
  add_header(MAP_REQUEST_HEADERS, "x-clock", now > 0 ? "set" : "zero");
  char *path = get_header(MAP_REQUEST_HEADERS, ":path");
  if (path) {
    proxy_record_metric(path_len, strlen(path));
    char msg[300];
    snprintf(msg, sizeof msg, "observe: request to %.256s", path);
    log_str(LOG_INFO, msg);
    free(path);
  }
  if (!get_header(MAP_REQUEST_HEADERS, "x-known")) log_str(LOG_WARN, "observe: no x-known header");
  return ACTION_CONTINUE;
}

EXPORT(proxy_on_done) int proxy_on_done(uint32_t ctx) {
  proxy_increment_metric(inflight, -1);
  return 1;
}
