// Load generator for NATS JetStream (benchmarks/compare builds it with Debian's libnats-dev):
// Python NATS clients top out far below the server, so this one is C.
//
//   nats_load URL --records N --size BYTES [--rate R] [--consume] [--warmup N]
//
// Publishes N messages (after --warmup more) to a file-storage stream with js_PublishAsync
// (up to 4096 acknowledgements outstanding), either as fast as the window allows or open-loop at
// R messages/s (each message is due at start + i/R; latency counts from then, as rafka-bench
// does). Each message carries its due time (monotonic ns) in its first 8 bytes; the rest is half
// random bytes, half a repeated pattern, as rafka-bench's compressible payload. With --consume a
// push consumer (no acks, new messages only) in the same process measures end-to-end latency.
// Prints one JSON object: records, seconds, records per second, and latency percentiles in ms.
#include <nats/nats.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

typedef struct {
    uint32_t *micros;  // one latency per measured message, in µs
    int64_t count;
    int64_t capacity;
    pthread_mutex_t lock;
} samples;

static void record(samples *s, int64_t nanos) {
    pthread_mutex_lock(&s->lock);
    if (s->count < s->capacity) s->micros[s->count++] = (uint32_t)(nanos < 1000 ? 1 : nanos / 1000);
    pthread_mutex_unlock(&s->lock);
}

static int compare_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void print_summary(const char *name, samples *s) {
    if (s->count == 0) {
        printf("\"%s\": null", name);
        return;
    }
    qsort(s->micros, (size_t)s->count, sizeof(uint32_t), compare_u32);
    double sum = 0;
    for (int64_t i = 0; i < s->count; i++) sum += s->micros[i];
#define AT(p) (s->micros[(int64_t)((p) / 100.0 * (double)(s->count - 1))] / 1000.0)
    printf("\"%s\": {\"count\": %lld, \"mean\": %.3f, \"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, \"p999\": %.3f, \"max\": %.3f}",
           name, (long long)s->count, sum / (double)s->count / 1000.0, AT(50), AT(90), AT(99), AT(99.9),
           s->micros[s->count - 1] / 1000.0);
#undef AT
}

static samples acks, arrivals;
static int64_t warmup_messages;
static volatile int64_t acked, received, last_ack_ns;

static int64_t stamp_of(natsMsg *msg) {
    int64_t stamp;
    memcpy(&stamp, natsMsg_GetData(msg), sizeof stamp);
    return stamp;
}

// Each acknowledgement: latency from when the message was due. The first 8 bytes after the
// stamp hold the message's sequence number, to leave warm-up messages out.
static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure) {
    (void)js;
    (void)pa;
    (void)closure;
    int64_t t = now_ns();
    if (pae == NULL) {
        int64_t sequence;
        memcpy(&sequence, natsMsg_GetData(msg) + 8, sizeof sequence);
        if (sequence >= warmup_messages) record(&acks, t - stamp_of(msg));
        __atomic_add_fetch(&acked, 1, __ATOMIC_RELAXED);
        last_ack_ns = t;
    } else {
        fprintf(stderr, "publish failed: %s\n", pae->ErrText ? pae->ErrText : "?");
    }
    natsMsg_Destroy(msg);
}

static void on_message(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
    (void)nc;
    (void)sub;
    (void)closure;
    int64_t t = now_ns();
    int64_t sequence;
    memcpy(&sequence, natsMsg_GetData(msg) + 8, sizeof sequence);
    if (sequence >= warmup_messages) record(&arrivals, t - stamp_of(msg));
    __atomic_add_fetch(&received, 1, __ATOMIC_RELAXED);
    natsMsg_Destroy(msg);
}

static void check(natsStatus status, const char *what) {
    if (status != NATS_OK) {
        fprintf(stderr, "%s: %s\n", what, natsStatus_GetText(status));
        exit(1);
    }
}

int main(int argc, char **argv) {
    const char *url = argc > 1 ? argv[1] : "nats://127.0.0.1:4222";
    int64_t records = 1000000, size = 1024;
    double rate = 0;
    int consume = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--records") && i + 1 < argc) records = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc) size = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--rate") && i + 1 < argc) rate = atof(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) warmup_messages = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--consume")) consume = 1;
        else {
            fprintf(stderr, "usage: nats_load URL --records N --size BYTES [--rate R] [--warmup N] [--consume]\n");
            return 2;
        }
    }
    if (size < 16) size = 16;
    int64_t total = records + warmup_messages;
    acks.capacity = arrivals.capacity = records;
    acks.micros = malloc(sizeof(uint32_t) * (size_t)records);
    arrivals.micros = malloc(sizeof(uint32_t) * (size_t)records);
    pthread_mutex_init(&acks.lock, NULL);
    pthread_mutex_init(&arrivals.lock, NULL);

    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    check(natsConnection_ConnectTo(&nc, url), "connect");
    jsOptions options;
    jsOptions_Init(&options);
    options.PublishAsync.MaxPending = 4096;
    options.PublishAsync.AckHandler = on_ack;
    check(natsConnection_JetStream(&js, nc, &options), "jetstream");

    const char *subjects[] = {"bench.>"};
    jsStreamConfig stream;
    jsStreamConfig_Init(&stream);
    stream.Name = "BENCH";
    stream.Subjects = subjects;
    stream.SubjectsLen = 1;
    stream.Storage = js_FileStorage;
    jsErrCode code = 0;
    js_DeleteStream(js, "BENCH", NULL, &code);
    jsStreamInfo *info = NULL;
    check(js_AddStream(&info, js, &stream, NULL, &code), "add stream");
    jsStreamInfo_Destroy(info);

    natsSubscription *sub = NULL;
    if (consume) {
        jsSubOptions subOptions;
        jsSubOptions_Init(&subOptions);
        subOptions.Stream = "BENCH";
        subOptions.Config.AckPolicy = js_AckNone;
        subOptions.Config.DeliverPolicy = js_DeliverNew;
        check(js_Subscribe(&sub, js, "bench.data", on_message, NULL, NULL, &subOptions, &code), "subscribe");
        natsSubscription_SetPendingLimits(sub, -1, -1);
    }

    char *payload = malloc((size_t)size);
    srand(7);
    for (int64_t i = 16; i < size; i++) payload[i] = i < 16 + (size - 16) / 2 ? (char)rand() : "nats payload "[i % 13];
    int64_t start = now_ns(), measure_from = 0;
    for (int64_t i = 0; i < total; i++) {
        int64_t due = rate > 0 ? start + (int64_t)((double)i * 1e9 / rate) : now_ns();
        if (rate > 0) {
            int64_t wait = due - now_ns();
            if (wait > 20000) {
                struct timespec t = {wait / 1000000000, wait % 1000000000};
                nanosleep(&t, NULL);
            }
        }
        if (i == warmup_messages) measure_from = rate > 0 ? due : now_ns();
        memcpy(payload, &due, 8);
        memcpy(payload + 8, &i, 8);
        check(js_PublishAsync(js, "bench.data", payload, (int)size, NULL), "publish");
    }
    jsPubOptions wait;
    jsPubOptions_Init(&wait);
    wait.MaxWait = 60000;
    check(js_PublishAsyncComplete(js, &wait), "publish complete");
    int64_t end = last_ack_ns;
    if (consume) {
        int64_t deadline = now_ns() + 30000000000LL;
        while (__atomic_load_n(&received, __ATOMIC_RELAXED) < total && now_ns() < deadline) nats_Sleep(1);
    }
    double seconds = (double)(end - measure_from) / 1e9;
    printf("{\"records\": %lld, \"seconds\": %.3f, \"recordsPerSecond\": %.1f, \"megabytesPerSecond\": %.1f, ",
           (long long)records, seconds, (double)records / seconds, (double)(records * size) / seconds / 1e6);
    printf("\"received\": %lld, ", (long long)received);
    print_summary("produceLatency", &acks);
    printf(", ");
    print_summary("endToEndLatency", &arrivals);
    printf("}\n");
    if (sub) natsSubscription_Destroy(sub);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return 0;
}
