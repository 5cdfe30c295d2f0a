/* The proxy-wasm ABI 0.2.1 host functions and helpers the test filters use.
 *
 * Kept to what the filters need: each filter is a few dozen lines of C that exercises one area
 * of the host (headers, local replies, body buffering, metrics/shared data/properties/logs),
 * so the same .wasm can run in envoykit's WasmHost and in a real Envoy and be compared. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define IMPORT(name) __attribute__((import_module("env"), import_name(#name)))
#define EXPORT(name) __attribute__((export_name(#name)))

enum { MAP_REQUEST_HEADERS = 0, MAP_REQUEST_TRAILERS = 1, MAP_RESPONSE_HEADERS = 2, MAP_RESPONSE_TRAILERS = 3 };
enum { BUF_REQUEST_BODY = 0, BUF_RESPONSE_BODY = 1, BUF_VM_CONFIG = 6, BUF_PLUGIN_CONFIG = 7 };
enum { LOG_TRACE, LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_CRITICAL };
enum { ACTION_CONTINUE = 0, ACTION_PAUSE = 1 };
enum { METRIC_COUNTER = 0, METRIC_GAUGE = 1, METRIC_HISTOGRAM = 2 };

IMPORT(proxy_log) int proxy_log(int level, const char *msg, size_t len);
IMPORT(proxy_get_header_map_value)
int proxy_get_header_map_value(int map, const char *key, size_t key_len, char **value, size_t *value_len);
IMPORT(proxy_add_header_map_value)
int proxy_add_header_map_value(int map, const char *key, size_t key_len, const char *value, size_t value_len);
IMPORT(proxy_replace_header_map_value)
int proxy_replace_header_map_value(int map, const char *key, size_t key_len, const char *value, size_t value_len);
IMPORT(proxy_remove_header_map_value) int proxy_remove_header_map_value(int map, const char *key, size_t key_len);
IMPORT(proxy_get_buffer_bytes)
int proxy_get_buffer_bytes(int buffer, size_t start, size_t max, char **data, size_t *len);
IMPORT(proxy_set_buffer_bytes)
int proxy_set_buffer_bytes(int buffer, size_t start, size_t size, const char *data, size_t len);
IMPORT(proxy_send_local_response)
int proxy_send_local_response(int status, const char *details, size_t details_len, const char *body, size_t body_len,
                              const char *headers, size_t headers_len, int grpc_status);
IMPORT(proxy_get_property) int proxy_get_property(const char *path, size_t path_len, char **value, size_t *value_len);
IMPORT(proxy_get_shared_data)
int proxy_get_shared_data(const char *key, size_t key_len, char **value, size_t *value_len, uint32_t *cas);
IMPORT(proxy_set_shared_data)
int proxy_set_shared_data(const char *key, size_t key_len, const char *value, size_t value_len, uint32_t cas);
IMPORT(proxy_define_metric) int proxy_define_metric(int type, const char *name, size_t name_len, uint32_t *id);
IMPORT(proxy_increment_metric) int proxy_increment_metric(uint32_t id, int64_t offset);
IMPORT(proxy_record_metric) int proxy_record_metric(uint32_t id, uint64_t value);
IMPORT(proxy_get_current_time_nanoseconds) int proxy_get_current_time_nanoseconds(uint64_t *ns);

EXPORT(proxy_abi_version_0_2_1) void proxy_abi_version_0_2_1(void) {}
EXPORT(proxy_on_memory_allocate) void *proxy_on_memory_allocate(size_t size) { return malloc(size); }
EXPORT(proxy_on_context_create) void proxy_on_context_create(uint32_t context_id, uint32_t root_id) {}
EXPORT(proxy_on_vm_start) int proxy_on_vm_start(uint32_t root_id, size_t vm_config_size) { return 1; }

static void log_str(int level, const char *msg) { proxy_log(level, msg, strlen(msg)); }

static int add_header(int map, const char *key, const char *value) {
  return proxy_add_header_map_value(map, key, strlen(key), value, strlen(value));
}

/* The value of a header as a NUL-terminated string (caller frees), or NULL when absent. */
static char *get_header(int map, const char *key) {
  char *value = NULL;
  size_t len = 0;
  if (proxy_get_header_map_value(map, key, strlen(key), &value, &len) != 0) return NULL;
  char *out = malloc(len + 1);
  memcpy(out, value, len);
  out[len] = 0;
  free(value);
  return out;
}
