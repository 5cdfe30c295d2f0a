/* A minimal HTTP/2 gRPC front end as a CPython extension (envoykit runtime: the rate-limit
 * service's `--server h2` and the sidecar's `server: h2`).
 *
 * One thread runs an epoll loop: it accepts connections, feeds their bytes to nghttp2 (the
 * system libnghttp2.so.14, loaded with dlopen: no -dev headers needed, the few declarations
 * below follow nghttp2 1.52's public ABI), and collects, per loop iteration, every complete
 * unary request (a gRPC message with its 5-byte prefix) and every event of the bidi-streaming
 * calls (paths given as `streaming`). Once per loop iteration it hands them to Python, the GIL
 * held only for that:
 *
 *   unary:     handler([(path, message), ...]) -> [bytes | (code, message), ...], one answer
 *              per call: HEADERS (:status 200) + DATA + trailers (grpc-status 0), or a
 *              trailers-only error (with `metadata` set: (path, message, value or None));
 *   streaming: stream_handler([(sid, kind, data), ...]) -> [(sid, bytes | None, finish), ...]
 *              where kind is OPEN (data = (path, value of the `metadata` header or None)),
 *              MESSAGE (data = one gRPC message), HALF_CLOSE (the client is done sending) or
 *              CANCEL (stream reset, connection gone, or C ended it: forget the sid). An
 *              answer sends its message (if any) on the stream, and finish (None: keep open;
 *              code or (code, message)) ends it with that grpc-status. Answers for a sid that
 *              is gone are ignored.
 *
 * HTTP/2 itself (SETTINGS, PING, WINDOW_UPDATE, flow control, RST_STREAM, GOAWAY on errors) is
 * nghttp2's. Malformed calls (bad framing, compressed or oversized messages, unknown unary
 * methods when `unary` is given, non-gRPC content types) get an error status in C and never
 * reach Python. A client that dies ends only its streams (CANCEL events). shutdown(grace) from
 * any thread: stop accepting, GOAWAY every connection, finish the calls in flight, return.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* ---- nghttp2 1.52 public ABI (the subset used here) ---------------------------------------- */

typedef struct nghttp2_session nghttp2_session;
typedef struct nghttp2_session_callbacks nghttp2_session_callbacks;
typedef struct nghttp2_option nghttp2_option;
typedef struct {
    uint8_t *name;
    uint8_t *value;
    size_t namelen;
    size_t valuelen;
    uint8_t flags;
} nghttp2_nv;
typedef struct {
    size_t length;
    int32_t stream_id;
    uint8_t type;
    uint8_t flags;
    uint8_t reserved;
} nghttp2_frame_hd;
/* nghttp2_frame is a union whose every member starts with the frame header. */
typedef struct {
    nghttp2_frame_hd hd;
} nghttp2_frame;
typedef union {
    int fd;
    void *ptr;
} nghttp2_data_source;
typedef ssize_t (*nghttp2_data_source_read_callback)(nghttp2_session *, int32_t, uint8_t *, size_t,
                                                     uint32_t *, nghttp2_data_source *, void *);
typedef struct {
    nghttp2_data_source source;
    nghttp2_data_source_read_callback read_callback;
} nghttp2_data_provider;
typedef struct {
    int32_t settings_id;
    uint32_t value;
} nghttp2_settings_entry;

typedef int (*on_begin_headers_cb)(nghttp2_session *, const nghttp2_frame *, void *);
typedef int (*on_header_cb)(nghttp2_session *, const nghttp2_frame *, const uint8_t *, size_t,
                            const uint8_t *, size_t, uint8_t, void *);
typedef int (*on_data_chunk_recv_cb)(nghttp2_session *, uint8_t, int32_t, const uint8_t *, size_t,
                                     void *);
typedef int (*on_frame_recv_cb)(nghttp2_session *, const nghttp2_frame *, void *);
typedef int (*on_stream_close_cb)(nghttp2_session *, int32_t, uint32_t, void *);
typedef int (*on_frame_send_cb)(nghttp2_session *, const nghttp2_frame *, void *);

#define NGHTTP2_DATA 0
#define NGHTTP2_HEADERS 1
#define NGHTTP2_FLAG_END_STREAM 0x01
#define NGHTTP2_DATA_FLAG_EOF 0x01
#define NGHTTP2_DATA_FLAG_NO_END_STREAM 0x02
#define NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS 0x03
#define NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE 0x06
#define NGHTTP2_NO_ERROR 0
#define NGHTTP2_INTERNAL_ERROR 2
#define NGHTTP2_ERR_DEFERRED (-508)

static struct {
    int (*callbacks_new)(nghttp2_session_callbacks **);
    void (*callbacks_del)(nghttp2_session_callbacks *);
    void (*set_on_begin_headers)(nghttp2_session_callbacks *, on_begin_headers_cb);
    void (*set_on_header)(nghttp2_session_callbacks *, on_header_cb);
    void (*set_on_data_chunk_recv)(nghttp2_session_callbacks *, on_data_chunk_recv_cb);
    void (*set_on_frame_recv)(nghttp2_session_callbacks *, on_frame_recv_cb);
    void (*set_on_stream_close)(nghttp2_session_callbacks *, on_stream_close_cb);
    void (*set_on_frame_send)(nghttp2_session_callbacks *, on_frame_send_cb);
    int (*resume_data)(nghttp2_session *, int32_t);
    int (*server_new)(nghttp2_session **, const nghttp2_session_callbacks *, void *);
    int (*server_new2)(nghttp2_session **, const nghttp2_session_callbacks *, void *, const nghttp2_option *);
    int (*option_new)(nghttp2_option **);
    void (*option_del)(nghttp2_option *);
    /* Optional (nghttp2 >= 1.57, and Debian's 1.52 with the CVE-2023-44487 fix). */
    void (*set_stream_reset_rate_limit)(nghttp2_option *, uint64_t, uint64_t);
    void (*session_del)(nghttp2_session *);
    ssize_t (*mem_recv)(nghttp2_session *, const uint8_t *, size_t);
    ssize_t (*mem_send)(nghttp2_session *, const uint8_t **);
    int (*want_read)(nghttp2_session *);
    int (*want_write)(nghttp2_session *);
    void *(*get_stream_user_data)(nghttp2_session *, int32_t);
    int (*set_stream_user_data)(nghttp2_session *, int32_t, void *);
    int (*submit_settings)(nghttp2_session *, uint8_t, const nghttp2_settings_entry *, size_t);
    int (*submit_response)(nghttp2_session *, int32_t, const nghttp2_nv *, size_t,
                           const nghttp2_data_provider *);
    int (*submit_trailer)(nghttp2_session *, int32_t, const nghttp2_nv *, size_t);
    int (*submit_rst_stream)(nghttp2_session *, uint8_t, int32_t, uint32_t);
    int (*submit_goaway)(nghttp2_session *, uint8_t, int32_t, uint32_t, const uint8_t *, size_t);
    int32_t (*last_proc_stream_id)(nghttp2_session *);
    const char *(*strerror)(int);
    const struct nghttp2_info {
        int age;
        int version_num;
        const char *version_str;
        const char *proto_str;
    } *(*version)(int);
} ng;

static const char *ng_load(void) {
    static char error[512];
    void *lib = dlopen("libnghttp2.so.14", RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        snprintf(error, sizeof error, "cannot load libnghttp2.so.14 (apt-get install libnghttp2-14): %s",
                 dlerror());
        return error;
    }
#define SYM(field, name)                                                                          \
    do {                                                                                          \
        *(void **)(&ng.field) = dlsym(lib, name);                                                 \
        if (ng.field == NULL) {                                                                   \
            snprintf(error, sizeof error, "libnghttp2.so.14 lacks %s", name);                     \
            return error;                                                                         \
        }                                                                                         \
    } while (0)
    SYM(callbacks_new, "nghttp2_session_callbacks_new");
    SYM(callbacks_del, "nghttp2_session_callbacks_del");
    SYM(set_on_begin_headers, "nghttp2_session_callbacks_set_on_begin_headers_callback");
    SYM(set_on_header, "nghttp2_session_callbacks_set_on_header_callback");
    SYM(set_on_data_chunk_recv, "nghttp2_session_callbacks_set_on_data_chunk_recv_callback");
    SYM(set_on_frame_recv, "nghttp2_session_callbacks_set_on_frame_recv_callback");
    SYM(set_on_stream_close, "nghttp2_session_callbacks_set_on_stream_close_callback");
    SYM(set_on_frame_send, "nghttp2_session_callbacks_set_on_frame_send_callback");
    SYM(resume_data, "nghttp2_session_resume_data");
    SYM(server_new, "nghttp2_session_server_new");
    SYM(server_new2, "nghttp2_session_server_new2");
    SYM(option_new, "nghttp2_option_new");
    SYM(option_del, "nghttp2_option_del");
    *(void **)(&ng.set_stream_reset_rate_limit) = dlsym(lib, "nghttp2_option_set_stream_reset_rate_limit");
    SYM(session_del, "nghttp2_session_del");
    SYM(mem_recv, "nghttp2_session_mem_recv");
    SYM(mem_send, "nghttp2_session_mem_send");
    SYM(want_read, "nghttp2_session_want_read");
    SYM(want_write, "nghttp2_session_want_write");
    SYM(get_stream_user_data, "nghttp2_session_get_stream_user_data");
    SYM(set_stream_user_data, "nghttp2_session_set_stream_user_data");
    SYM(submit_settings, "nghttp2_submit_settings");
    SYM(submit_response, "nghttp2_submit_response");
    SYM(submit_trailer, "nghttp2_submit_trailer");
    SYM(submit_rst_stream, "nghttp2_submit_rst_stream");
    SYM(submit_goaway, "nghttp2_submit_goaway");
    SYM(last_proc_stream_id, "nghttp2_session_get_last_proc_stream_id");
    SYM(strerror, "nghttp2_strerror");
    SYM(version, "nghttp2_version");
#undef SYM
    return NULL;
}

/* ---- state ---------------------------------------------------------------------------------- */

#define READ_CHUNK (256 * 1024)
#define WRITE_BATCH (256 * 1024)
#define OUT_LIMIT (4 * 1024 * 1024) /* stop reading a connection whose peer does not read */
#define MAX_EVENTS 512

enum { ST_RECEIVING, ST_QUEUED, ST_RESPONDING, ST_STREAMING };
enum { EV_OPEN, EV_MESSAGE, EV_HALF_CLOSE, EV_CANCEL };

typedef struct {
    uint64_t sid;
    int kind;
    uint8_t *data; /* MESSAGE: the message; OPEN: the path */
    size_t len;
    uint8_t *meta; /* OPEN: the metadata header's value, or NULL */
    size_t metalen;
} event;

typedef struct conn conn;
typedef struct stream stream;
typedef struct server server;

struct stream {
    conn *c; /* NULL once nghttp2 closed the stream or the connection went away */
    int32_t id;
    int state;
    int in_trailers;
    int grpc_content;
    int too_big;
    int opened;       /* the request HEADERS were complete */
    int streaming;    /* a call of a streaming method */
    int py_open;      /* Python knows this stream (registered under sid) */
    int headers_sent; /* response HEADERS submitted (streaming) */
    int deferred;     /* the data provider waits for resume_data (streaming) */
    int finishing;    /* the stream's end is decided: trailers after the queued data */
    int finish_code;
    char *finish_msg;
    size_t finish_mlen;
    int remote_closed; /* the client's END_STREAM arrived */
    uint64_t sid;
    char *path;
    size_t pathlen;
    uint8_t *meta;
    size_t metalen;
    uint8_t *body;
    size_t len, cap;
    uint8_t *out;
    size_t outlen, outpos, outcap;
    stream *prev, *next; /* the connection's streams */
};

struct conn {
    server *srv;
    int fd;
    int dead;
    int closing; /* fatal protocol error: flush what nghttp2 queued, then close */
    uint32_t events;
    nghttp2_session *s;
    uint8_t *wbuf;
    size_t wlen, wpos, wcap;
    stream *streams;
    conn *prev, *next;   /* all live connections */
    conn *dirty_next;    /* this iteration's connections to flush */
    int dirty;
    conn *grave_next;
};

struct server {
    PyObject_HEAD
    int listen_fd;
    int ep;
    int wake_fd;
    int running;
    int stopping;
    double grace;
    double deadline;
    Py_ssize_t max_message;
    PyObject *handler;
    PyObject *stream_handler;
    char **streaming; /* paths of the bidi-streaming methods */
    size_t *streaminglen;
    size_t nstreaming;
    char **unary; /* known unary paths; others are UNIMPLEMENTED in C (unless unary_any) */
    size_t *unarylen;
    size_t nunary;
    int unary_any;
    char *meta_name; /* request header passed with OPEN */
    size_t meta_namelen;
    event *events;
    size_t nevents, capevents;
    stream **slots; /* sid -> stream: slot in the low 32 bits, generation in the high ones */
    uint32_t *gens;
    uint32_t *free_slots;
    size_t nslots, nfree;
    unsigned long long stream_events;
    unsigned long long stream_batches;
    long live_streams;
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    conn *conns;
    long nconns;
    conn *dirty;
    conn *grave;
    stream **ready;
    size_t nready, capready;
    unsigned long long calls;
    unsigned long long batches;
    unsigned long long accepted;
    uint8_t *rbuf;
};

static int listen_tag, wake_tag; /* epoll data for the listener and the wake-up eventfd */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void mark_dirty(conn *c) {
    if (!c->dirty && !c->dead) {
        c->dirty = 1;
        c->dirty_next = c->srv->dirty;
        c->srv->dirty = c;
    }
}

static long allocated_streams; /* every stream struct alive, all servers (tests check for leaks) */

static void stream_free(stream *st) {
    allocated_streams--;
    free(st->path);
    free(st->meta);
    free(st->finish_msg);
    free(st->body);
    free(st->out);
    free(st);
}

/* ---- streaming bookkeeping: events for Python, sid <-> stream ------------------------------ */

static int queue_event(server *srv, uint64_t sid, int kind, const uint8_t *data, size_t len,
                       const uint8_t *meta, size_t metalen) {
    if (srv->nevents == srv->capevents) {
        size_t cap = srv->capevents ? srv->capevents * 2 : 256;
        event *events = realloc(srv->events, cap * sizeof *events);
        if (events == NULL) return -1;
        srv->events = events;
        srv->capevents = cap;
    }
    event *ev = &srv->events[srv->nevents];
    memset(ev, 0, sizeof *ev);
    ev->sid = sid;
    ev->kind = kind;
    if (data != NULL) {
        ev->data = malloc(len ? len : 1);
        if (ev->data == NULL) return -1;
        memcpy(ev->data, data, len);
        ev->len = len;
    }
    if (meta != NULL) {
        ev->meta = malloc(metalen ? metalen : 1);
        if (ev->meta == NULL) {
            free(ev->data);
            return -1;
        }
        memcpy(ev->meta, meta, metalen);
        ev->metalen = metalen;
    }
    srv->nevents++;
    return 0;
}

static void free_events(server *srv) {
    for (size_t i = 0; i < srv->nevents; i++) {
        free(srv->events[i].data);
        free(srv->events[i].meta);
    }
    srv->nevents = 0;
}

static int slot_register(server *srv, stream *st) {
    uint32_t slot;
    if (srv->nfree > 0) {
        slot = srv->free_slots[--srv->nfree];
    } else {
        if (srv->nslots >= 0xffffffffu) return -1;
        size_t cap = srv->nslots + 1;
        stream **slots = realloc(srv->slots, cap * sizeof *slots);
        if (slots == NULL) return -1;
        srv->slots = slots;
        uint32_t *gens = realloc(srv->gens, cap * sizeof *gens);
        if (gens == NULL) return -1;
        srv->gens = gens;
        uint32_t *free_slots = realloc(srv->free_slots, cap * sizeof *free_slots);
        if (free_slots == NULL) return -1;
        srv->free_slots = free_slots;
        slot = (uint32_t)srv->nslots++;
        srv->gens[slot] = 1;
    }
    srv->slots[slot] = st;
    st->sid = ((uint64_t)srv->gens[slot] << 32) | slot;
    st->py_open = 1;
    srv->live_streams++;
    return 0;
}

static void slot_release(server *srv, stream *st) {
    if (!st->py_open) return;
    uint32_t slot = (uint32_t)(st->sid & 0xffffffffu);
    srv->slots[slot] = NULL;
    srv->gens[slot]++;
    srv->free_slots[srv->nfree++] = slot;
    st->py_open = 0;
    srv->live_streams--;
}

static stream *slot_lookup(server *srv, uint64_t sid) {
    uint32_t slot = (uint32_t)(sid & 0xffffffffu);
    if (slot >= srv->nslots || srv->gens[slot] != (uint32_t)(sid >> 32)) return NULL;
    return srv->slots[slot];
}

/* The stream goes away (reset, connection closed) or C ended it: Python forgets it. */
static void stream_forget(server *srv, stream *st) {
    if (!st->py_open) return;
    queue_event(srv, st->sid, EV_CANCEL, NULL, 0, NULL, 0); /* out of memory: Python keeps a stale entry */
    slot_release(srv, st);
}

static void stream_unlink(stream *st) {
    conn *c = st->c;
    if (c == NULL) return;
    if (st->prev) st->prev->next = st->next;
    else c->streams = st->next;
    if (st->next) st->next->prev = st->prev;
    st->prev = st->next = NULL;
    st->c = NULL;
}

static void conn_close(conn *c) {
    server *srv = c->srv;
    if (c->dead) return;
    c->dead = 1;
    epoll_ctl(srv->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    stream *st = c->streams;
    while (st != NULL) {
        stream *next = st->next;
        stream_forget(srv, st);
        st->c = NULL;
        st->prev = st->next = NULL;
        if (st->state != ST_QUEUED) stream_free(st); /* queued ones are freed by dispatch */
        st = next;
    }
    c->streams = NULL;
    if (c->prev) c->prev->next = c->next;
    else srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    srv->nconns--;
    c->grave_next = srv->grave; /* freed at the end of the loop iteration */
    srv->grave = c;
}

static void bury(server *srv) {
    while (srv->grave != NULL) {
        conn *c = srv->grave;
        srv->grave = c->grave_next;
        if (c->s) ng.session_del(c->s);
        free(c->wbuf);
        free(c);
    }
}

/* ---- responses ------------------------------------------------------------------------------ */

#define NV(n, v, vl) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl), 0}

static ssize_t data_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                         nghttp2_data_source *source, void *user) {
    (void)user;
    stream *st = source->ptr;
    size_t n = st->outlen - st->outpos;
    if (n > length) n = length;
    memcpy(buf, st->out + st->outpos, n);
    st->outpos += n;
    if (st->outpos == st->outlen) {
        *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        nghttp2_nv trailer[] = {NV("grpc-status", "0", 1)};
        ng.submit_trailer(s, id, trailer, 1);
    }
    return (ssize_t)n;
}

static void respond_ok(stream *st, const char *data, size_t n) {
    st->out = malloc(n + 5);
    if (st->out == NULL) {
        ng.submit_rst_stream(st->c->s, 0, st->id, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    st->out[0] = 0;
    st->out[1] = (uint8_t)(n >> 24);
    st->out[2] = (uint8_t)(n >> 16);
    st->out[3] = (uint8_t)(n >> 8);
    st->out[4] = (uint8_t)n;
    memcpy(st->out + 5, data, n);
    st->outlen = n + 5;
    st->outpos = 0;
    st->state = ST_RESPONDING;
    nghttp2_nv headers[] = {NV(":status", "200", 3), NV("content-type", "application/grpc", 16)};
    nghttp2_data_provider prd;
    prd.source.ptr = st;
    prd.read_callback = data_read;
    if (ng.submit_response(st->c->s, st->id, headers, 2, &prd) != 0)
        ng.submit_rst_stream(st->c->s, 0, st->id, NGHTTP2_INTERNAL_ERROR);
}

#define ENCODED_MAX (3 * 256 + 1)

/* grpc-message is percent-encoded (and cut at ~256 characters). */
static size_t encode_message(const char *message, size_t mlen, char *encoded) {
    size_t elen = 0;
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < mlen && elen + 3 < ENCODED_MAX; i++) {
        unsigned char ch = (unsigned char)message[i];
        if (ch >= 0x20 && ch <= 0x7e && ch != '%') {
            encoded[elen++] = (char)ch;
        } else {
            encoded[elen++] = '%';
            encoded[elen++] = hex[ch >> 4];
            encoded[elen++] = hex[ch & 15];
        }
    }
    return elen;
}

/* A trailers-only answer: grpc-status and a percent-encoded grpc-message (none when empty). */
static void respond_error(stream *st, int code, const char *message, size_t mlen) {
    char status[16];
    int slen = snprintf(status, sizeof status, "%d", code);
    char encoded[ENCODED_MAX];
    size_t elen = encode_message(message, mlen, encoded);
    st->state = ST_RESPONDING;
    nghttp2_nv headers[] = {
        NV(":status", "200", 3),
        NV("content-type", "application/grpc", 16),
        NV("grpc-status", status, (size_t)slen),
        NV("grpc-message", encoded, elen),
    };
    if (ng.submit_response(st->c->s, st->id, headers, elen ? 4 : 3, NULL) != 0)
        ng.submit_rst_stream(st->c->s, 0, st->id, NGHTTP2_INTERNAL_ERROR);
}

static void respond_http(stream *st, const char *status) {
    st->state = ST_RESPONDING;
    nghttp2_nv headers[] = {NV(":status", status, strlen(status))};
    if (ng.submit_response(st->c->s, st->id, headers, 1, NULL) != 0)
        ng.submit_rst_stream(st->c->s, 0, st->id, NGHTTP2_INTERNAL_ERROR);
}

#define ERR(st, code, text) respond_error((st), (code), (text), sizeof(text) - 1)

/* -- streaming responses: HEADERS with the first message, DATA as messages come, trailers -- */

static ssize_t stream_data_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
                                uint32_t *flags, nghttp2_data_source *source, void *user) {
    (void)user;
    stream *st = source->ptr;
    size_t n = st->outlen - st->outpos;
    if (n == 0) {
        if (!st->finishing) {
            st->deferred = 1;
            return NGHTTP2_ERR_DEFERRED;
        }
        *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        char status[16];
        int slen = snprintf(status, sizeof status, "%d", st->finish_code);
        char encoded[ENCODED_MAX];
        size_t elen = encode_message(st->finish_msg ? st->finish_msg : "", st->finish_mlen, encoded);
        nghttp2_nv trailer[] = {NV("grpc-status", status, (size_t)slen), NV("grpc-message", encoded, elen)};
        ng.submit_trailer(s, id, trailer, elen ? 2 : 1);
        return 0;
    }
    if (n > length) n = length;
    memcpy(buf, st->out + st->outpos, n);
    st->outpos += n;
    if (st->outpos == st->outlen) st->outpos = st->outlen = 0;
    return (ssize_t)n;
}

static void stream_wake(stream *st) {
    if (st->deferred) {
        st->deferred = 0;
        ng.resume_data(st->c->s, st->id);
    }
}

/* Queue one message on a streaming call (response HEADERS go with the first). */
static void stream_send(stream *st, const char *data, size_t n) {
    if (st->finishing || st->c == NULL) return;
    if (st->outpos > 0) {
        memmove(st->out, st->out + st->outpos, st->outlen - st->outpos);
        st->outlen -= st->outpos;
        st->outpos = 0;
    }
    if (st->outlen + n + 5 > st->outcap) {
        size_t cap = st->outcap ? st->outcap : 256;
        while (cap < st->outlen + n + 5) cap *= 2;
        uint8_t *out = realloc(st->out, cap);
        if (out == NULL) {
            ng.submit_rst_stream(st->c->s, 0, st->id, NGHTTP2_INTERNAL_ERROR);
            st->finishing = 1;
            return;
        }
        st->out = out;
        st->outcap = cap;
    }
    uint8_t *p = st->out + st->outlen;
    p[0] = 0;
    p[1] = (uint8_t)(n >> 24);
    p[2] = (uint8_t)(n >> 16);
    p[3] = (uint8_t)(n >> 8);
    p[4] = (uint8_t)n;
    memcpy(p + 5, data, n);
    st->outlen += n + 5;
    if (!st->headers_sent) {
        st->headers_sent = 1;
        nghttp2_nv headers[] = {NV(":status", "200", 3), NV("content-type", "application/grpc", 16)};
        nghttp2_data_provider prd;
        prd.source.ptr = st;
        prd.read_callback = stream_data_read;
        if (ng.submit_response(st->c->s, st->id, headers, 2, &prd) != 0) {
            ng.submit_rst_stream(st->c->s, 0, st->id, NGHTTP2_INTERNAL_ERROR);
            st->finishing = 1;
        }
        return;
    }
    stream_wake(st);
}

/* End a streaming call with grpc-status `code` once its queued messages are out. Input that
 * still arrives is dropped; nothing more reaches Python (the caller releases the sid). */
static void stream_finish(stream *st, int code, const char *message, size_t mlen) {
    if (st->finishing || st->c == NULL) return;
    st->state = ST_RESPONDING;
    free(st->body);
    st->body = NULL;
    st->len = st->cap = 0;
    if (!st->headers_sent) {
        respond_error(st, code, message, mlen); /* trailers-only */
        st->finishing = 1;
        return;
    }
    st->finishing = 1;
    st->finish_code = code;
    if (mlen > 0) {
        st->finish_msg = malloc(mlen);
        if (st->finish_msg != NULL) {
            memcpy(st->finish_msg, message, mlen);
            st->finish_mlen = mlen;
        }
    }
    stream_wake(st);
}

/* C itself ends a streaming call (bad framing, oversized message): Python gets CANCEL. */
static void stream_fail(stream *st, int code, const char *message) {
    server *srv = st->c->srv;
    stream_finish(st, code, message, strlen(message));
    stream_forget(srv, st);
    mark_dirty(st->c);
}

static int path_in(char **paths, size_t *lens, size_t n, const char *path, size_t len) {
    for (size_t i = 0; i < n; i++)
        if (lens[i] == len && memcmp(paths[i], path, len) == 0) return 1;
    return 0;
}

/* The request HEADERS of a streaming method are complete: tell Python. */
static void stream_open(stream *st) {
    server *srv = st->c->srv;
    st->streaming = 1;
    if (!st->grpc_content) {
        respond_http(st, "415");
        st->finishing = 1;
        return;
    }
    if (slot_register(srv, st) != 0 ||
        queue_event(srv, st->sid, EV_OPEN, (const uint8_t *)st->path, st->pathlen, st->meta, st->metalen) != 0) {
        slot_release(srv, st);
        ERR(st, 8, "out of memory");
        st->finishing = 1;
        return;
    }
    st->state = ST_STREAMING;
}

/* Cut the complete messages off the stream's buffer, one MESSAGE event each. */
static void stream_messages(stream *st) {
    server *srv = st->c->srv;
    size_t pos = 0;
    while (st->len - pos >= 5) {
        const uint8_t *p = st->body + pos;
        size_t declared = ((size_t)p[1] << 24) | ((size_t)p[2] << 16) | ((size_t)p[3] << 8) | (size_t)p[4];
        if (p[0] != 0) {
            stream_fail(st, 12, "compressed gRPC messages are not supported");
            return;
        }
        if (declared > (size_t)srv->max_message) {
            stream_fail(st, 8, "request message larger than the server accepts");
            return;
        }
        if (st->len - pos - 5 < declared) break;
        if (queue_event(srv, st->sid, EV_MESSAGE, p + 5, declared, NULL, 0) != 0) {
            stream_fail(st, 8, "out of memory");
            return;
        }
        pos += 5 + declared;
    }
    if (pos > 0) {
        memmove(st->body, st->body + pos, st->len - pos);
        st->len -= pos;
    }
}

/* The client's END_STREAM on a streaming call. */
static void stream_half_close(stream *st) {
    st->remote_closed = 1;
    if (st->state != ST_STREAMING) return;
    if (st->len > 0) {
        stream_fail(st, 13, "malformed gRPC request: the stream ended inside a message");
        return;
    }
    if (queue_event(st->c->srv, st->sid, EV_HALF_CLOSE, NULL, 0, NULL, 0) != 0)
        stream_fail(st, 8, "out of memory");
}

/* The request's END_STREAM arrived: check the framing, answer errors here, queue the rest. */
static void request_complete(stream *st) {
    server *srv = st->c->srv;
    if (!st->grpc_content) {
        respond_http(st, "415");
        return;
    }
    if (st->too_big) {
        ERR(st, 8, "request message larger than the server accepts");
        return;
    }
    if (st->path == NULL) {
        ERR(st, 13, "request without :path");
        return;
    }
    if (!srv->unary_any && !path_in(srv->unary, srv->unarylen, srv->nunary, st->path, st->pathlen)) {
        ERR(st, 12, "unknown method");
        return;
    }
    if (st->len < 5) {
        ERR(st, 13, "malformed gRPC request: no message");
        return;
    }
    if (st->body[0] != 0) {
        ERR(st, 12, "compressed gRPC messages are not supported");
        return;
    }
    size_t declared = ((size_t)st->body[1] << 24) | ((size_t)st->body[2] << 16) |
                      ((size_t)st->body[3] << 8) | (size_t)st->body[4];
    if (declared != st->len - 5) {
        ERR(st, 13, "malformed gRPC request: length prefix does not match the body (unary only)");
        return;
    }
    if (srv->nready == srv->capready) {
        size_t cap = srv->capready ? srv->capready * 2 : 256;
        stream **ready = realloc(srv->ready, cap * sizeof *ready);
        if (ready == NULL) {
            ERR(st, 8, "out of memory");
            return;
        }
        srv->ready = ready;
        srv->capready = cap;
    }
    st->state = ST_QUEUED;
    srv->ready[srv->nready++] = st;
}

/* ---- nghttp2 callbacks ---------------------------------------------------------------------- */

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *user) {
    conn *c = user;
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    stream *st = ng.get_stream_user_data(s, frame->hd.stream_id);
    if (st != NULL) { /* trailers of a request */
        st->in_trailers = 1;
        return 0;
    }
    st = calloc(1, sizeof *st);
    if (st == NULL) return ng.submit_rst_stream(s, 0, frame->hd.stream_id, NGHTTP2_INTERNAL_ERROR), 0;
    allocated_streams++;
    st->c = c;
    st->id = frame->hd.stream_id;
    st->next = c->streams;
    if (c->streams) c->streams->prev = st;
    c->streams = st;
    ng.set_stream_user_data(s, st->id, st);
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user) {
    (void)flags;
    (void)user;
    stream *st = ng.get_stream_user_data(s, frame->hd.stream_id);
    if (st == NULL || st->in_trailers) return 0;
    if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
        free(st->path);
        st->path = malloc(valuelen + 1);
        if (st->path == NULL) return 0;
        memcpy(st->path, value, valuelen);
        st->path[valuelen] = 0;
        st->pathlen = valuelen;
    } else if (st->c->srv->meta_namelen == namelen && st->meta == NULL &&
               memcmp(name, st->c->srv->meta_name, namelen) == 0) {
        st->meta = malloc(valuelen ? valuelen : 1);
        if (st->meta == NULL) return 0;
        memcpy(st->meta, value, valuelen);
        st->metalen = valuelen;
    } else if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
        st->grpc_content = valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0 &&
                           (valuelen == 16 || value[16] == '+' || value[16] == ';');
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                         void *user) {
    (void)flags;
    conn *c = user;
    stream *st = ng.get_stream_user_data(s, id);
    if (st == NULL || st->too_big) return 0;
    if (st->state == ST_STREAMING) {
        if (st->len + len > st->cap) {
            size_t cap = st->cap ? st->cap : 256;
            while (cap < st->len + len) cap *= 2;
            uint8_t *body = realloc(st->body, cap);
            if (body == NULL) {
                stream_fail(st, 8, "out of memory");
                return 0;
            }
            st->body = body;
            st->cap = cap;
        }
        memcpy(st->body + st->len, data, len);
        st->len += len;
        stream_messages(st);
        return 0;
    }
    if (st->state != ST_RECEIVING) return 0;
    if (st->len + len > (size_t)c->srv->max_message + 5) {
        st->too_big = 1;
        free(st->body);
        st->body = NULL;
        st->len = st->cap = 0;
        return 0;
    }
    if (st->len + len > st->cap) {
        size_t cap = st->cap ? st->cap : 256;
        while (cap < st->len + len) cap *= 2;
        uint8_t *body = realloc(st->body, cap);
        if (body == NULL) {
            st->too_big = 1;
            return 0;
        }
        st->body = body;
        st->cap = cap;
    }
    memcpy(st->body + st->len, data, len);
    st->len += len;
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *user) {
    conn *c = user;
    if (frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS) return 0;
    stream *st = ng.get_stream_user_data(s, frame->hd.stream_id);
    if (st == NULL) return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && !st->opened) {
        st->opened = 1;
        server *srv = c->srv;
        if (st->path != NULL && path_in(srv->streaming, srv->streaminglen, srv->nstreaming, st->path, st->pathlen))
            stream_open(st);
    }
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
        if (st->streaming) stream_half_close(st);
        else if (st->state == ST_RECEIVING) request_complete(st);
    }
    return 0;
}

/* A streaming call we ended while the client still sends: RST_STREAM(NO_ERROR) after the
 * trailers (RFC 9113 8.1), so the stream does not linger until the client notices. */
static int on_frame_send(nghttp2_session *s, const nghttp2_frame *frame, void *user) {
    (void)user;
    if (frame->hd.type != NGHTTP2_HEADERS || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) return 0;
    stream *st = ng.get_stream_user_data(s, frame->hd.stream_id);
    if (st != NULL && st->streaming && !st->remote_closed)
        ng.submit_rst_stream(s, 0, frame->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t error_code, void *user) {
    (void)error_code;
    stream *st = ng.get_stream_user_data(s, id);
    if (st == NULL) return 0;
    ng.set_stream_user_data(s, id, NULL);
    stream_forget(((conn *)user)->srv, st); /* reset or done: Python forgets it (CANCEL if still open) */
    stream_unlink(st); /* st->c = NULL: a queued stream is dropped by dispatch */
    if (st->state != ST_QUEUED) stream_free(st);
    return 0;
}

/* ---- connections ---------------------------------------------------------------------------- */

static void conn_events(conn *c) {
    size_t pending = c->wlen - c->wpos;
    uint32_t want = (pending < OUT_LIMIT ? EPOLLIN : 0) | (pending ? EPOLLOUT : 0);
    if (want != c->events) {
        struct epoll_event ev = {.events = want, .data.ptr = c};
        epoll_ctl(c->srv->ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->events = want;
    }
}

/* Write what nghttp2 has queued (as far as the socket takes it); close a finished session. */
static void conn_flush(conn *c) {
    if (c->dead) return;
    for (;;) {
        if (c->wpos < c->wlen) {
            ssize_t n = send(c->fd, c->wbuf + c->wpos, c->wlen - c->wpos, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                conn_close(c);
                return;
            }
            c->wpos += (size_t)n;
            if (c->wpos < c->wlen) continue;
            c->wpos = c->wlen = 0;
        }
        /* Pull frames from nghttp2 into one buffer, so a batch of answers is one send(). */
        int more = 0;
        while (c->wlen < WRITE_BATCH) {
            const uint8_t *data;
            ssize_t n = ng.mem_send(c->s, &data);
            if (n < 0) {
                conn_close(c);
                return;
            }
            if (n == 0) break;
            more = 1;
            if (c->wlen + (size_t)n > c->wcap) {
                size_t cap = c->wcap ? c->wcap : 16384;
                while (cap < c->wlen + (size_t)n) cap *= 2;
                uint8_t *buf = realloc(c->wbuf, cap);
                if (buf == NULL) {
                    conn_close(c);
                    return;
                }
                c->wbuf = buf;
                c->wcap = cap;
            }
            memcpy(c->wbuf + c->wlen, data, (size_t)n);
            c->wlen += (size_t)n;
        }
        if (!more) break;
    }
    if (c->wpos == c->wlen &&
        (c->closing || (!ng.want_read(c->s) && !ng.want_write(c->s)))) {
        conn_close(c);
        return;
    }
    conn_events(c);
}

static void conn_read(conn *c) {
    uint8_t *buf = c->srv->rbuf; /* one per server: several servers may run in one process */
    if (c->dead || c->closing) return;
    ssize_t n;
    do {
        n = recv(c->fd, buf, READ_CHUNK, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) { /* peer closed or reset: its calls are cancelled */
        conn_close(c);
        return;
    }
    ssize_t used = ng.mem_recv(c->s, buf, (size_t)n);
    if (used < 0) c->closing = 1; /* nghttp2 queued a GOAWAY where it could; send it and close */
    mark_dirty(c);
}

static void accept_all(server *srv) {
    for (;;) {
        int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR) continue;
            return; /* EAGAIN, or EMFILE & co.: try again on the next event */
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* fails harmlessly on unix */
        conn *c = calloc(1, sizeof *c);
        if (c == NULL || ng.server_new2(&c->s, srv->cbs, c, srv->opt) != 0) {
            free(c);
            close(fd);
            continue;
        }
        c->srv = srv;
        c->fd = fd;
        c->events = EPOLLIN;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(srv->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            ng.session_del(c->s);
            free(c);
            close(fd);
            continue;
        }
        nghttp2_settings_entry settings[] = {
            {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1024},
            {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 65536},
        };
        ng.submit_settings(c->s, 0, settings, 2);
        c->next = srv->conns;
        if (srv->conns) srv->conns->prev = c;
        srv->conns = c;
        srv->nconns++;
        srv->accepted++;
        mark_dirty(c);
    }
}

static void begin_shutdown(server *srv) {
    if (srv->stopping) { /* a second shutdown(grace) may only hurry the first */
        double deadline = now_s() + srv->grace;
        if (deadline < srv->deadline) srv->deadline = deadline;
        return;
    }
    srv->stopping = 1;
    srv->deadline = now_s() + srv->grace;
    epoll_ctl(srv->ep, EPOLL_CTL_DEL, srv->listen_fd, NULL);
    for (conn *c = srv->conns; c != NULL; c = c->next) {
        ng.submit_goaway(c->s, 0, ng.last_proc_stream_id(c->s), NGHTTP2_NO_ERROR, NULL, 0);
        mark_dirty(c);
    }
}

/* ---- the Python call ------------------------------------------------------------------------ */

/* Hand this iteration's stream events to the stream handler in one call (GIL held), apply
 * the answers in order. A failing handler ends every stream of the batch with INTERNAL. */
static void dispatch_streams(server *srv) {
    size_t n = srv->nevents;
    if (n == 0) return;
    PyObject *events = PyList_New((Py_ssize_t)n);
    PyObject *result = NULL;
    if (events != NULL) {
        for (size_t i = 0; i < n; i++) {
            event *ev = &srv->events[i];
            PyObject *item;
            if (ev->kind == EV_OPEN) {
                PyObject *meta = ev->meta ? PyBytes_FromStringAndSize((char *)ev->meta, (Py_ssize_t)ev->metalen)
                                          : (Py_INCREF(Py_None), Py_None);
                item = meta ? Py_BuildValue("(Ki(y#N))", (unsigned long long)ev->sid, ev->kind, ev->data,
                                            (Py_ssize_t)ev->len, meta)
                            : NULL;
            } else if (ev->kind == EV_MESSAGE) {
                item = Py_BuildValue("(Kiy#)", (unsigned long long)ev->sid, ev->kind, ev->data,
                                     (Py_ssize_t)ev->len);
            } else {
                item = Py_BuildValue("(KiO)", (unsigned long long)ev->sid, ev->kind, Py_None);
            }
            if (item == NULL) {
                Py_CLEAR(events);
                break;
            }
            PyList_SET_ITEM(events, (Py_ssize_t)i, item);
        }
    }
    if (events != NULL) {
        result = PyObject_CallOneArg(srv->stream_handler, events);
        Py_DECREF(events);
    }
    if (result != NULL && !PyList_Check(result)) {
        Py_DECREF(result);
        result = NULL;
        PyErr_SetString(PyExc_TypeError, "the h2 stream handler must return a list of answers");
    }
    srv->stream_events += n;
    srv->stream_batches++;
    if (result == NULL) {
        PyErr_WriteUnraisable(srv->stream_handler);
        for (size_t i = 0; i < n; i++) {
            stream *st = slot_lookup(srv, srv->events[i].sid);
            if (st != NULL && st->c != NULL) {
                stream_finish(st, 13, "internal error", 14);
                slot_release(srv, st);
                mark_dirty(st->c);
            }
        }
        free_events(srv);
        return;
    }
    free_events(srv);
    Py_ssize_t m = PyList_GET_SIZE(result);
    for (Py_ssize_t i = 0; i < m; i++) {
        PyObject *answer = PyList_GET_ITEM(result, i);
        unsigned long long sid;
        PyObject *payload, *finish;
        if (!PyTuple_Check(answer) || !PyArg_ParseTuple(answer, "KOO", &sid, &payload, &finish)) {
            PyErr_Clear();
            continue;
        }
        stream *st = slot_lookup(srv, (uint64_t)sid);
        if (st == NULL || st->c == NULL) continue; /* gone meanwhile */
        if (PyBytes_Check(payload)) stream_send(st, PyBytes_AS_STRING(payload), (size_t)PyBytes_GET_SIZE(payload));
        long code = -1;
        const char *text = "";
        Py_ssize_t tlen = 0;
        if (PyLong_Check(finish)) {
            code = PyLong_AsLong(finish);
        } else if (PyTuple_Check(finish) && PyTuple_GET_SIZE(finish) == 2 &&
                   PyLong_Check(PyTuple_GET_ITEM(finish, 0)) && PyUnicode_Check(PyTuple_GET_ITEM(finish, 1))) {
            code = PyLong_AsLong(PyTuple_GET_ITEM(finish, 0));
            text = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(finish, 1), &tlen);
            if (text == NULL) {
                PyErr_Clear();
                text = "";
                tlen = 0;
            }
        } else if (finish != Py_None) {
            code = 13;
            text = "internal error";
            tlen = 14;
        }
        if (code >= 0) {
            if (code > 16) code = 13;
            stream_finish(st, (int)code, text, (size_t)tlen);
            slot_release(srv, st);
        }
        mark_dirty(st->c);
    }
    Py_DECREF(result);
}

/* Hand the queued requests to the handler in one call (GIL held), answer each. */
static void dispatch(server *srv) {
    size_t n = 0;
    for (size_t i = 0; i < srv->nready; i++) { /* drop calls cancelled while queued */
        stream *st = srv->ready[i];
        if (st->c == NULL || st->c->dead) stream_free(st);
        else srv->ready[n++] = st;
    }
    srv->nready = n;
    if (n == 0) return;
    PyObject *calls = PyList_New((Py_ssize_t)n);
    PyObject *result = NULL;
    if (calls != NULL) {
        for (size_t i = 0; i < n; i++) {
            stream *st = srv->ready[i];
            PyObject *item;
            if (srv->meta_namelen > 0) /* (path, message, metadata value or None) */
                item = st->meta ? Py_BuildValue("(y#y#y#)", st->path, (Py_ssize_t)st->pathlen, st->body + 5,
                                                (Py_ssize_t)(st->len - 5), st->meta, (Py_ssize_t)st->metalen)
                                : Py_BuildValue("(y#y#O)", st->path, (Py_ssize_t)st->pathlen, st->body + 5,
                                                (Py_ssize_t)(st->len - 5), Py_None);
            else
                item = Py_BuildValue("(y#y#)", st->path, (Py_ssize_t)st->pathlen, st->body + 5,
                                     (Py_ssize_t)(st->len - 5));
            if (item == NULL) {
                Py_CLEAR(calls);
                break;
            }
            PyList_SET_ITEM(calls, (Py_ssize_t)i, item);
        }
    }
    if (calls != NULL) {
        result = PyObject_CallOneArg(srv->handler, calls);
        Py_DECREF(calls);
    }
    if (result != NULL && (!PyList_Check(result) || PyList_GET_SIZE(result) != (Py_ssize_t)n)) {
        Py_DECREF(result);
        result = NULL;
        PyErr_SetString(PyExc_TypeError, "the h2 handler must return one answer per call");
    }
    if (result == NULL) PyErr_WriteUnraisable(srv->handler);
    srv->calls += n;
    srv->batches++;
    for (size_t i = 0; i < n; i++) {
        stream *st = srv->ready[i];
        st->state = ST_RESPONDING;
        free(st->body); /* the request is no longer needed */
        st->body = NULL;
        st->len = st->cap = 0;
        PyObject *answer = result ? PyList_GET_ITEM(result, (Py_ssize_t)i) : NULL;
        char *data;
        Py_ssize_t size;
        long code;
        const char *text;
        Py_ssize_t tlen;
        if (answer != NULL && PyBytes_Check(answer)) {
            PyBytes_AsStringAndSize(answer, &data, &size);
            respond_ok(st, data, (size_t)size);
        } else if (answer != NULL && PyTuple_Check(answer) && PyTuple_GET_SIZE(answer) == 2 &&
                   PyLong_Check(PyTuple_GET_ITEM(answer, 0)) &&
                   PyUnicode_Check(PyTuple_GET_ITEM(answer, 1)) &&
                   (code = PyLong_AsLong(PyTuple_GET_ITEM(answer, 0))) > 0 && code < 17 &&
                   (text = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(answer, 1), &tlen)) != NULL) {
            respond_error(st, (int)code, text, (size_t)tlen);
        } else {
            PyErr_Clear();
            ERR(st, 13, "internal error");
        }
        mark_dirty(st->c);
    }
    Py_XDECREF(result);
    srv->nready = 0;
}

/* ---- the Python type ------------------------------------------------------------------------ */

/* A sequence of bytes -> C arrays (copies). */
static int path_list(PyObject *seq, char ***paths, size_t **lens, size_t *n) {
    PyObject *fast = PySequence_Fast(seq, "expected a sequence of bytes");
    if (fast == NULL) return -1;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(fast);
    *paths = calloc((size_t)count + 1, sizeof **paths);
    *lens = calloc((size_t)count + 1, sizeof **lens);
    if (*paths == NULL || *lens == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, i);
        if (!PyBytes_Check(item)) {
            Py_DECREF(fast);
            PyErr_SetString(PyExc_TypeError, "method paths must be bytes");
            return -1;
        }
        size_t len = (size_t)PyBytes_GET_SIZE(item);
        (*paths)[i] = malloc(len + 1);
        if ((*paths)[i] == NULL) {
            Py_DECREF(fast);
            PyErr_NoMemory();
            return -1;
        }
        memcpy((*paths)[i], PyBytes_AS_STRING(item), len + 1);
        (*lens)[i] = len;
        *n = (size_t)i + 1;
    }
    Py_DECREF(fast);
    return 0;
}

static void path_list_free(char **paths, size_t n) {
    if (paths == NULL) return;
    for (size_t i = 0; i < n; i++) free(paths[i]);
    free(paths);
}

static int Server_init(server *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"listen_fd", "handler", "max_message", "stream_handler", "streaming",
                             "unary", "metadata", NULL};
    int fd;
    PyObject *handler;
    Py_ssize_t max_message = 4 * 1024 * 1024;
    PyObject *stream_handler = Py_None, *streaming = NULL, *unary = Py_None;
    const char *meta = NULL;
    Py_ssize_t metalen = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iO|nOOOy#", kwlist, &fd, &handler, &max_message,
                                     &stream_handler, &streaming, &unary, &meta, &metalen))
        return -1;
    if (!PyCallable_Check(handler)) {
        PyErr_SetString(PyExc_TypeError, "handler must be callable");
        return -1;
    }
    if (self->ep > 0) {
        PyErr_SetString(PyExc_RuntimeError, "already initialised");
        return -1;
    }
    if (streaming != NULL && PyObject_IsTrue(streaming)) {
        if (!PyCallable_Check(stream_handler)) {
            PyErr_SetString(PyExc_TypeError, "streaming methods need a callable stream_handler");
            return -1;
        }
        if (path_list(streaming, &self->streaming, &self->streaminglen, &self->nstreaming) != 0) return -1;
        Py_INCREF(stream_handler);
        self->stream_handler = stream_handler;
    }
    self->unary_any = unary == Py_None;
    if (!self->unary_any && path_list(unary, &self->unary, &self->unarylen, &self->nunary) != 0) return -1;
    if (meta != NULL && metalen > 0) {
        self->meta_name = malloc((size_t)metalen);
        if (self->meta_name == NULL) return PyErr_NoMemory(), -1;
        memcpy(self->meta_name, meta, (size_t)metalen);
        self->meta_namelen = (size_t)metalen;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return PyErr_SetFromErrno(PyExc_OSError), -1;
    self->listen_fd = fd;
    self->max_message = max_message;
    self->ep = epoll_create1(EPOLL_CLOEXEC);
    self->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (self->ep < 0 || self->wake_fd < 0) return PyErr_SetFromErrno(PyExc_OSError), -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &listen_tag};
    if (epoll_ctl(self->ep, EPOLL_CTL_ADD, fd, &ev) != 0) return PyErr_SetFromErrno(PyExc_OSError), -1;
    ev.data.ptr = &wake_tag;
    if (epoll_ctl(self->ep, EPOLL_CTL_ADD, self->wake_fd, &ev) != 0)
        return PyErr_SetFromErrno(PyExc_OSError), -1;
    self->rbuf = malloc(READ_CHUNK);
    if (self->rbuf == NULL || ng.callbacks_new(&self->cbs) != 0) return PyErr_NoMemory(), -1;
    ng.set_on_begin_headers(self->cbs, on_begin_headers);
    ng.set_on_header(self->cbs, on_header);
    ng.set_on_data_chunk_recv(self->cbs, on_data_chunk);
    ng.set_on_frame_recv(self->cbs, on_frame_recv);
    ng.set_on_stream_close(self->cbs, on_stream_close);
    ng.set_on_frame_send(self->cbs, on_frame_send);
    /* Envoy's ext_proc client ends every stream it is done with by RST_STREAM: nghttp2's
     * rapid-reset guard (burst 1000, then 33/s) would GOAWAY a busy sidecar connection after
     * ~1000 requests. The guard stays, sized above what one Envoy can send (~10k streams/s per
     * core); MAX_CONCURRENT_STREAMS still bounds the streams alive at once. */
    if (ng.option_new(&self->opt) != 0) return PyErr_NoMemory(), -1;
    if (ng.set_stream_reset_rate_limit != NULL) ng.set_stream_reset_rate_limit(self->opt, 100000, 100000);
    Py_INCREF(handler);
    self->handler = handler;
    return 0;
}

static PyObject *Server_serve(server *self, PyObject *unused) {
    (void)unused;
    if (self->ep <= 0 || self->running) {
        PyErr_SetString(PyExc_RuntimeError, "not initialised, or already serving");
        return NULL;
    }
    self->running = 1;
    struct epoll_event events[MAX_EVENTS];
    int failure = 0;
    PyThreadState *ts = PyEval_SaveThread();
    for (;;) {
        int timeout = self->nevents ? 0 : -1; /* CANCELs queued by a close: deliver them now */
        if (self->stopping) {
            double left = self->deadline - now_s();
            if (self->nconns == 0 || left <= 0) break;
            timeout = (int)(left * 1000) + 1;
        }
        int n = epoll_wait(self->ep, events, MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            failure = errno;
            break;
        }
        for (int i = 0; i < n; i++) {
            void *tag = events[i].data.ptr;
            if (tag == &listen_tag) {
                if (!self->stopping) accept_all(self);
            } else if (tag == &wake_tag) {
                uint64_t value;
                while (read(self->wake_fd, &value, sizeof value) > 0) {
                }
                begin_shutdown(self);
            } else {
                conn *c = tag;
                if (c->dead) continue;
                if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) conn_read(c);
                if (!c->dead && (events[i].events & EPOLLOUT)) mark_dirty(c);
            }
        }
        if (self->nready || self->nevents) {
            PyEval_RestoreThread(ts);
            dispatch(self);
            dispatch_streams(self);
            ts = PyEval_SaveThread();
        }
        while (self->dirty != NULL) {
            conn *c = self->dirty;
            self->dirty = c->dirty_next;
            c->dirty = 0;
            conn_flush(c);
        }
        bury(self);
    }
    while (self->conns != NULL) conn_close(self->conns);
    self->dirty = NULL;
    bury(self);
    if (self->nevents) { /* the CANCELs of what was still open: Python forgets those streams */
        PyEval_RestoreThread(ts);
        dispatch_streams(self);
        ts = PyEval_SaveThread();
    }
    for (size_t i = 0; i < self->nready; i++) stream_free(self->ready[i]);
    self->nready = 0;
    PyEval_RestoreThread(ts);
    self->running = 0;
    if (failure) {
        errno = failure;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *Server_shutdown(server *self, PyObject *args) {
    double grace = 0.0;
    if (!PyArg_ParseTuple(args, "|d", &grace)) return NULL;
    if (self->wake_fd <= 0) Py_RETURN_NONE;
    self->grace = grace < 0 ? 0 : grace;
    uint64_t one = 1;
    if (write(self->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN) return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *Server_stats(server *self, PyObject *unused) {
    (void)unused;
    return Py_BuildValue("{s:K,s:K,s:K,s:l,s:K,s:K,s:l,s:l}", "calls", self->calls, "batches",
                         self->batches, "accepted", self->accepted, "connections", self->nconns,
                         "stream_events", self->stream_events, "stream_batches", self->stream_batches,
                         "streams", self->live_streams, "allocated_streams", allocated_streams);
}

static void Server_dealloc(server *self) {
    if (self->ep > 0) close(self->ep);
    if (self->wake_fd > 0) close(self->wake_fd);
    if (self->cbs) ng.callbacks_del(self->cbs);
    if (self->opt) ng.option_del(self->opt);
    free(self->ready);
    free(self->rbuf);
    free_events(self);
    free(self->events);
    free(self->slots);
    free(self->gens);
    free(self->free_slots);
    path_list_free(self->streaming, self->nstreaming);
    free(self->streaminglen);
    path_list_free(self->unary, self->nunary);
    free(self->unarylen);
    free(self->meta_name);
    Py_XDECREF(self->stream_handler);
    Py_XDECREF(self->handler);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Server_methods[] = {
    {"serve", (PyCFunction)Server_serve, METH_NOARGS,
     "Run the loop in this thread until shutdown() (releases the GIL except in the handler)."},
    {"shutdown", (PyCFunction)Server_shutdown, METH_VARARGS,
     "shutdown(grace=0.0): from any thread; GOAWAY, finish in-flight calls for up to grace s."},
    {"stats", (PyCFunction)Server_stats, METH_NOARGS,
     "calls, batches, accepted, connections, stream_events, stream_batches, streams"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ServerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_envoykit_h2.Server",
    .tp_basicsize = sizeof(server),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Server(listen_fd, handler, max_message=4 MiB, stream_handler=None, streaming=(), unary=None,"
              " metadata=b''): gRPC over HTTP/2 (unary calls and bidi streams).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Server_init,
    .tp_dealloc = (destructor)Server_dealloc,
    .tp_methods = Server_methods,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_envoykit_h2", "HTTP/2 gRPC front end",
                                    -1, NULL, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__envoykit_h2(void) {
    const char *error = ng_load();
    if (error != NULL) {
        PyErr_SetString(PyExc_ImportError, error);
        return NULL;
    }
    if (PyType_Ready(&ServerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&ServerType);
    if (PyModule_AddObject(m, "Server", (PyObject *)&ServerType) < 0) return NULL;
    PyModule_AddStringConstant(m, "nghttp2_version", ng.version(0)->version_str);
    return m;
}
