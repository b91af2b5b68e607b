/*
 * callqc.rules._recall: the rule engine's recall scan in C, against the system Hyperscan (libhs).
 *
 * The Python binding of Hyperscan calls back into Python for every match; on the default pack that
 * and the numpy work around it cost three times the scan itself. This module does the whole recall
 * of a batch of calls in one call: it lays the calls' normalised text out as UTF-8 layers (plain,
 * phonetic, and the one-byte-per-character "narrow" layer), scans each with its database, collects
 * matches in C, turns byte offsets into character offsets, finds the leftmost start of regex matches
 * (the regex reversed and anchored, over the characters before the end read backwards; a SOM_LEFTMOST
 * database where Hyperscan refuses the reversed form), drops hits that cross
 * a segment or touch an English word, keeps only the first agent-side hit of "first only" patterns,
 * and returns the hits grouped by call.
 *
 * Python (callqc/rules/native.py) decides what goes in which database; this file only executes.
 * The GIL is held throughout, so one scratch per Core is enough.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <hs/hs.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum {
    F_PHONETIC = 1,     /* matched in the phonetic layer */
    F_BOUND_LEFT = 2,   /* a literal starting with an ASCII letter/digit: needs a word boundary */
    F_BOUND_RIGHT = 4,  /* ... ending with one */
    F_END_ONLY = 8,     /* callers only use the end: start is end - 1 */
    F_FIRST_ONLY = 16,  /* only the first agent-side hit in a call is needed */
    F_REVERSED = 32,    /* its start database is the regex reversed and anchored, not a SOM one */
};
enum { L_PLAIN = 0, L_PHON = 1, L_NARROW = 2 };
#define SEP '\n'

static PyObject *CompileError;

/* ---------------------------------------------------------------- Database */

typedef struct {
    PyObject_HEAD
    hs_database_t *db;
} Database;

static void Database_dealloc(Database *self) {
    if (self->db) hs_free_database(self->db);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Database(exprs: list[bytes], ids: list[int], flags: list[int], som: bool = False, vectored: bool = False)
 * som: report the leftmost start of every match (HS_FLAG_SOM_LEFTMOST on every expression);
 * vectored: for hs_scan_vector (else block mode). */
static int Database_init(Database *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"exprs", "ids", "flags", "som", "vectored", NULL};
    PyObject *exprs, *ids, *flags;
    int som = 0, vectored = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O!|pp", kwlist, &PyList_Type, &exprs, &PyList_Type, &ids,
                                     &PyList_Type, &flags, &som, &vectored))
        return -1;
    Py_ssize_t n = PyList_GET_SIZE(exprs);
    if (n == 0 || PyList_GET_SIZE(ids) != n || PyList_GET_SIZE(flags) != n) {
        PyErr_SetString(PyExc_ValueError, "exprs, ids and flags must be non-empty lists of one length");
        return -1;
    }
    const char **e = PyMem_Calloc(n, sizeof(char *));
    unsigned *f = PyMem_Calloc(n, sizeof(unsigned));
    unsigned *i = PyMem_Calloc(n, sizeof(unsigned));
    int rc = -1;
    if (!e || !f || !i) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *x = PyList_GET_ITEM(exprs, k);
        if (!PyBytes_Check(x)) {
            PyErr_SetString(PyExc_TypeError, "exprs must be bytes");
            goto done;
        }
        e[k] = PyBytes_AS_STRING(x);
        f[k] = (unsigned)PyLong_AsUnsignedLong(PyList_GET_ITEM(flags, k));
        i[k] = (unsigned)PyLong_AsUnsignedLong(PyList_GET_ITEM(ids, k));
        if (PyErr_Occurred()) goto done;
    }
    if (self->db) {
        hs_free_database(self->db);
        self->db = NULL;
    }
    hs_compile_error_t *err = NULL;
    for (Py_ssize_t k = 0; som && k < n; k++) f[k] |= HS_FLAG_SOM_LEFTMOST;
    unsigned mode = vectored ? HS_MODE_VECTORED : HS_MODE_BLOCK;
    if (hs_compile_multi(e, f, i, (unsigned)n, mode, NULL, &self->db, &err) != HS_SUCCESS) {
        PyObject *exc = Py_BuildValue("(is)", err ? err->expression : -1, err ? err->message : "unknown error");
        if (exc) {
            PyErr_SetObject(CompileError, exc);
            Py_DECREF(exc);
        }
        hs_free_compile_error(err);
        self->db = NULL;
        goto done;
    }
    rc = 0;
done:
    PyMem_Free(e);
    PyMem_Free(f);
    PyMem_Free(i);
    return rc;
}

static PyTypeObject DatabaseType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "callqc.rules._recall.Database",
    .tp_basicsize = sizeof(Database),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A compiled Hyperscan database (block or vectored mode); CompileError(index, message) names the culprit.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Database_init,
    .tp_dealloc = (destructor)Database_dealloc,
};

static hs_database_t *db_of(PyObject *o) {
    return (o && o != Py_None) ? ((Database *)o)->db : NULL;
}

/* ---------------------------------------------------------------- growable arrays */

typedef struct {
    int32_t pid;
    int32_t layer;
    int64_t end; /* byte offset (plain/phon layers) or character offset (narrow layer) */
} Raw;

typedef struct {
    Raw *v;
    size_t n, cap; /* cap: bytes */
    int layer;
    int failed;
} RawList;

/* At least `need` bytes in *buf, which is kept from call to call and grows by doubling; `keep`: its
 * content is kept too (else it may be lost). -1 with MemoryError set when out of memory. */
static int grow(void *buf, size_t *cap, size_t need, int keep) {
    void **p = buf;
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 4096;
    while (c < need) c *= 2;
    void *q;
    if (keep) {
        q = PyMem_Realloc(*p, c);
    } else {
        PyMem_Free(*p);
        *p = NULL;
        *cap = 0;
        q = PyMem_Malloc(c);
    }
    if (!q) {
        PyErr_NoMemory();
        return -1;
    }
    *p = q;
    *cap = c;
    return 0;
}

static int push(RawList *r, int32_t pid, int32_t layer, int64_t end) {
    if (grow(&r->v, &r->cap, (r->n + 1) * sizeof(Raw), 1) < 0) {
        r->failed = 1;
        return 1; /* stop the scan */
    }
    r->v[r->n++] = (Raw){pid, layer, end};
    return 0;
}

static int on_match(unsigned int id, unsigned long long from, unsigned long long to, unsigned int flags,
                    void *ctx) {
    (void)from;
    (void)flags;
    RawList *r = ctx;
    return push(r, (int32_t)id, r->layer, (int64_t)to);
}

typedef struct {
    unsigned long long want, best;
} StartSearch;

/* a reversed regex over the text before an end, read backwards: its longest match is the leftmost start */
static int on_reversed(unsigned int id, unsigned long long from, unsigned long long to, unsigned int flags,
                       void *ctx) {
    (void)id;
    (void)from;
    (void)flags;
    unsigned long long *longest = ctx;
    if (to > *longest) *longest = to;
    return 0;
}

static int on_start(unsigned int id, unsigned long long from, unsigned long long to, unsigned int flags,
                    void *ctx) {
    (void)id;
    (void)flags;
    StartSearch *s = ctx;
    if (to == s->want && from < s->best) s->best = from;
    return 0;
}

/* One batch laid out: UTF-8 layers joined by SEP, and where every slot (segment) and call starts. */
typedef struct {
    Py_ssize_t ncalls, nslots;
    size_t slot_cap;                                   /* bytes of each slot array */
    size_t plain_cap, phon_cap, narrow_cap, calls_cap; /* the buffers are kept from batch to batch */
    int with_phon, with_narrow;                        /* this batch has a phonetic / narrow layer */
    char *plain, *phon;
    uint8_t *narrow;
    int64_t nbytes, nchars;
    int64_t *slot_byte, *slot_char, *slot_call; /* start of every slot; [nslots]: one past the end */
    int64_t *calls;                             /* the five per-call arrays below, in one block */
    int64_t *call_byte, *call_char;             /* start of every call; [ncalls]: one past the end */
    int64_t *call_slot;                         /* first slot of every call */
    int64_t *agent;                             /* characters of each call's agent side */
    int64_t *agent_byte;                        /* ... and its UTF-8 length */
} Layout;

static void layout_free(Layout *l) {
    PyMem_Free(l->plain);
    PyMem_Free(l->phon);
    PyMem_Free(l->narrow);
    PyMem_Free(l->slot_byte);
    PyMem_Free(l->slot_char);
    PyMem_Free(l->slot_call);
    PyMem_Free(l->calls);
}

/* A validated hit; `slot` becomes the transcript segment on output. */
typedef struct {
    int64_t call, pid, slot, start, end, layer;
} Hit;

/* ---------------------------------------------------------------- Core */

typedef struct {
    PyObject_HEAD
    PyObject *plain, *phon, *narrow, *first, *starts; /* Database or None; starts: one per pattern or None */
    Py_ssize_t npat;
    int64_t *lit_chars; /* characters of a literal (1 for a regex) */
    int64_t *byte_len;  /* UTF-8 bytes of a literal */
    int64_t *back;      /* characters searched back for a regex start */
    uint8_t *flags;
    uint8_t *narrow_table; /* byte of every code point in the narrow layer (0x110000) or NULL */
    hs_scratch_t *scratch;
    /* buffers reused from batch to batch (the GIL is held: one batch at a time) */
    Layout ws;
    RawList raw;
    Hit *hits, *sorted;
    size_t hits_cap, sorted_cap, per_call_cap;
    int64_t *per_call;
    int64_t *first_call; /* per pattern: the last call a first-use hit was kept for */
} Core;

static void Core_dealloc(Core *self) {
    Py_XDECREF(self->plain);
    Py_XDECREF(self->phon);
    Py_XDECREF(self->narrow);
    Py_XDECREF(self->first);
    Py_XDECREF(self->starts);
    PyMem_Free(self->lit_chars);
    PyMem_Free(self->byte_len);
    PyMem_Free(self->back);
    PyMem_Free(self->flags);
    PyMem_Free(self->narrow_table);
    if (self->scratch) hs_free_scratch(self->scratch);
    layout_free(&self->ws);
    PyMem_Free(self->raw.v);
    PyMem_Free(self->hits);
    PyMem_Free(self->sorted);
    PyMem_Free(self->per_call);
    PyMem_Free(self->first_call);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static void *copy_buffer(PyObject *o, Py_ssize_t want, const char *name) {
    Py_buffer view;
    if (PyObject_GetBuffer(o, &view, PyBUF_SIMPLE) < 0) return NULL;
    void *out = NULL;
    if (view.len != want)
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, expected %zd", name, view.len, want);
    else if (!(out = PyMem_Malloc(want ? want : 1)))
        PyErr_NoMemory();
    else
        memcpy(out, view.buf, want);
    PyBuffer_Release(&view);
    return out;
}

static int check_db(PyObject *o, const char *name) {
    if (o != Py_None && !PyObject_TypeCheck(o, &DatabaseType)) {
        PyErr_Format(PyExc_TypeError, "%s must be a Database or None", name);
        return -1;
    }
    return 0;
}

static int grow_scratch(Core *self, PyObject *o) {
    hs_database_t *db = db_of(o);
    if (db && hs_alloc_scratch(db, &self->scratch) != HS_SUCCESS) {
        PyErr_SetString(PyExc_MemoryError, "hs_alloc_scratch failed");
        return -1;
    }
    return 0;
}

/* Core(plain, phon, narrow, first, starts, lit_chars, byte_len, back, flags, narrow_table)
 * first: the vectored database of first-only patterns (SINGLEMATCH), scanned per call over its agent side.
 * starts: per pattern id, the Database its starts are found with (F_REVERSED: reversed and anchored,
 * else SOM_LEFTMOST; the pattern alone) or None; the int64 arrays and
 * the uint8 flags are indexed by pattern id; narrow_table: 0x110000 bytes or None. */
static int Core_init(Core *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"plain", "phon", "narrow", "first", "starts", "lit_chars", "byte_len", "back", "flags",
                             "narrow_table", NULL};
    PyObject *plain, *phon, *narrow, *first, *starts, *lit, *blen, *back, *flags, *table;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOO!OOOOO", kwlist, &plain, &phon, &narrow, &first, &PyList_Type,
                                     &starts, &lit, &blen, &back, &flags, &table))
        return -1;
    if (check_db(plain, "plain") || check_db(phon, "phon") || check_db(narrow, "narrow") || check_db(first, "first"))
        return -1;
    if (self->lit_chars) {
        PyErr_SetString(PyExc_RuntimeError, "Core is already initialised");
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(starts);
    for (Py_ssize_t k = 0; k < n; k++)
        if (check_db(PyList_GET_ITEM(starts, k), "starts entry")) return -1;
    self->npat = n;
    Py_INCREF(plain);
    self->plain = plain;
    Py_INCREF(phon);
    self->phon = phon;
    Py_INCREF(narrow);
    self->narrow = narrow;
    Py_INCREF(first);
    self->first = first;
    Py_INCREF(starts);
    self->starts = starts;
    if (!(self->lit_chars = copy_buffer(lit, 8 * n, "lit_chars"))) return -1;
    if (!(self->byte_len = copy_buffer(blen, 8 * n, "byte_len"))) return -1;
    if (!(self->back = copy_buffer(back, 8 * n, "back"))) return -1;
    if (!(self->flags = copy_buffer(flags, n, "flags"))) return -1;
    if (!(self->first_call = PyMem_Malloc((n ? n : 1) * 8))) {
        PyErr_NoMemory();
        return -1;
    }
    if (table != Py_None && !(self->narrow_table = copy_buffer(table, 0x110000, "narrow_table"))) return -1;
    if (narrow != Py_None && !self->narrow_table) {
        PyErr_SetString(PyExc_ValueError, "a narrow database needs a narrow_table");
        return -1;
    }
    if (grow_scratch(self, plain) || grow_scratch(self, phon) || grow_scratch(self, narrow) || grow_scratch(self, first))
        return -1;
    for (Py_ssize_t k = 0; k < n; k++)
        if (grow_scratch(self, PyList_GET_ITEM(starts, k))) return -1;
    return 0;
}

/* Room for one more slot (and the end marker) in the three slot arrays; -1 when out of memory. */
static int reserve_slot(Layout *l) {
    size_t need = (size_t)(l->nslots + 2) * 8, cap = l->slot_cap;
    if (need <= cap) return 0;
    for (int k = 0; k < 3; k++) {
        int64_t **array = k == 0 ? &l->slot_byte : k == 1 ? &l->slot_char : &l->slot_call;
        size_t c = l->slot_cap; /* the three grow alike */
        if (grow(array, &c, need, 1) < 0) return -1;
        cap = c;
    }
    l->slot_cap = cap;
    return 0;
}

static inline int open_slot(Layout *l, int64_t byte, int64_t chr, int64_t call) {
    if (reserve_slot(l) < 0) return -1;
    l->slot_byte[l->nslots] = byte;
    l->slot_char[l->nslots] = chr;
    l->slot_call[l->nslots++] = call;
    return 0;
}

/* A character of the Basic Multilingual Plane as 1-3 UTF-8 bytes (one 4-byte store: buffers keep slack). */
static inline char *put_bmp(char *o, Py_UCS4 c) {
    uint32_t three = (0xE0 | (c >> 12)) | ((0x80 | ((c >> 6) & 0x3F)) << 8) | ((0x80 | (c & 0x3F)) << 16);
    uint32_t two = (0xC0 | (c >> 6)) | ((0x80 | (c & 0x3F)) << 8);
    uint32_t bytes = c < 0x80 ? c : c < 0x800 ? two : three;
    memcpy(o, &bytes, 4);
    return o + 1 + (c >= 0x80) + (c >= 0x800);
}

static inline char *put_utf8(char *o, Py_UCS4 c) {
    if (c < 0x10000) return put_bmp(o, c);
    *o++ = (char)(0xF0 | (c >> 18));
    *o++ = (char)(0x80 | ((c >> 12) & 0x3F));
    *o++ = (char)(0x80 | ((c >> 6) & 0x3F));
    *o++ = (char)(0x80 | (c & 0x3F));
    return o;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define SIMD_ENCODER 1
#include <immintrin.h>
static int have_sse41;
/* pshufb masks that pick each half's (4 characters) UTF-8 bytes out of the b0/b1 pairs and the b2
 * bytes of 8 characters, by which of the 4 are 3-byte characters; and how many bytes that makes. */
static uint8_t pair_shuffle[2][16][16], last_shuffle[2][16][16], half_bytes[16];
static uint8_t bits8[256]; /* set bits of a byte (no popcnt instruction assumed) */

static void build_shuffles(void) {
    for (int b = 1; b < 256; b++) bits8[b] = (uint8_t)(bits8[b >> 1] + (b & 1));
    for (int half = 0; half < 2; half++)
        for (int mask = 0; mask < 16; mask++) {
            int out = 0;
            memset(pair_shuffle[half][mask], 0x80, 16);
            memset(last_shuffle[half][mask], 0x80, 16);
            for (int j = 0; j < 4; j++) {
                int lane = 4 * half + j;
                pair_shuffle[half][mask][out++] = (uint8_t)(2 * lane); /* lead byte (or the ASCII byte) */
                if (mask >> j & 1) {
                    pair_shuffle[half][mask][out++] = (uint8_t)(2 * lane + 1);
                    last_shuffle[half][mask][out++] = (uint8_t)lane;
                }
            }
            half_bytes[mask] = (uint8_t)out;
        }
}

/* Eight UCS-2 characters, each ASCII or a 3-byte character (Chinese text: almost every block), as UTF-8
 * at `o` (16 bytes of slack are written past the end); NULL when one needs 2 bytes. `three` and `seps`
 * receive which of the 8 are 3-byte characters and which are SEP. */
__attribute__((target("sse4.1"))) static inline char *encode8(const Py_UCS2 *src, char *o, unsigned *three,
                                                      unsigned *seps) {
    __m128i v = _mm_loadu_si128((const __m128i *)src);
    __m128i is3 = _mm_cmpeq_epi16(_mm_max_epu16(v, _mm_set1_epi16(0x800)), v);
    __m128i high = _mm_cmpeq_epi16(_mm_max_epu16(v, _mm_set1_epi16(0x80)), v);
    if (!_mm_testc_si128(is3, high)) return NULL; /* a character in [0x80, 0x800) */
    __m128i zero = _mm_setzero_si128(), low6 = _mm_set1_epi16(0x3F), cont = _mm_set1_epi16(0x80);
    unsigned mask = (unsigned)_mm_movemask_epi8(_mm_packs_epi16(is3, zero));
    *three = mask;
    *seps = (unsigned)_mm_movemask_epi8(_mm_packs_epi16(_mm_cmpeq_epi16(v, _mm_set1_epi16(SEP)), zero));
    __m128i b0 = _mm_blendv_epi8(v, _mm_or_si128(_mm_srli_epi16(v, 12), _mm_set1_epi16(0xE0)), is3);
    __m128i b1 = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(v, 6), low6), cont);
    __m128i b2 = _mm_packus_epi16(_mm_or_si128(_mm_and_si128(v, low6), cont), zero);
    __m128i pairs = _mm_unpacklo_epi8(_mm_packus_epi16(b0, zero), _mm_packus_epi16(b1, zero));
    for (int half = 0; half < 2; half++) {
        unsigned m = half ? mask >> 4 : mask & 15;
        __m128i out = _mm_or_si128(_mm_shuffle_epi8(pairs, _mm_loadu_si128((const __m128i *)pair_shuffle[half][m])),
                                   _mm_shuffle_epi8(b2, _mm_loadu_si128((const __m128i *)last_shuffle[half][m])));
        _mm_storeu_si128((__m128i *)o, out);
        o += half_bytes[m];
    }
    return o;
}
#endif

/* Where the encoder writes one layer. */
typedef struct {
    Layout *l;
    char *out, *o;  /* the layer and the write position */
    uint8_t *nw;    /* narrow layer write position (plain pass with a narrow database), else NULL */
    const uint8_t *table;
    int record;     /* plain pass: record slots */
    int failed;
    int64_t call, call_char; /* the call being written and its character offset */
} Writer;

/* Characters [from, to) of `s` (a str) as UTF-8 (and narrow bytes); on the plain pass every SEP opens
 * a slot. `simd`: blocks of eight UCS-2 characters go through encode8 (compiled into an SSE4.1 copy). */
static inline __attribute__((always_inline)) void encode_span_with(Writer *w, PyObject *s, Py_ssize_t from,
                                                                  Py_ssize_t to, int simd) {
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    char *o = w->o;
    uint8_t *nw = w->nw;
    Py_ssize_t i = from;
    while (i < to) {
#ifdef SIMD_ENCODER
        if (simd && kind == PyUnicode_2BYTE_KIND) {
            unsigned three, seps;
            char *next;
            while (i + 8 <= to && (next = encode8((const Py_UCS2 *)data + i, o, &three, &seps))) {
                if (nw)
                    for (int j = 0; j < 8; j++) *nw++ = w->table[((const Py_UCS2 *)data)[i + j]];
                for (; w->record && seps; seps &= seps - 1) { /* a slot opens after each SEP */
                    unsigned j = (unsigned)__builtin_ctz(seps) + 1;
                    int64_t byte = (o - w->out) + j + 2 * bits8[three & ((1u << j) - 1)];
                    if (open_slot(w->l, byte, w->call_char + i + j, w->call) < 0) {
                        w->failed = 1;
                        return;
                    }
                }
                o = next;
                i += 8;
            }
        }
#endif
        /* one by one up to the next block of eight (or the end) */
        Py_ssize_t stop = i + 8 < to ? i + 8 : to;
        for (; i < stop; i++) {
            Py_UCS4 c = PyUnicode_READ(kind, data, i);
            if (c == SEP && w->record && open_slot(w->l, (o - w->out) + 1, w->call_char + i + 1, w->call) < 0) {
                w->failed = 1;
                return;
            }
            o = put_utf8(o, c);
            if (nw) *nw++ = w->table[c];
        }
    }
    w->o = o;
    w->nw = nw;
}

#ifdef SIMD_ENCODER
__attribute__((target("sse4.1"))) static void encode_span_sse41(Writer *w, PyObject *s, Py_ssize_t from,
                                                               Py_ssize_t to) {
    encode_span_with(w, s, from, to, 1);
}
#endif

static void encode_span(Writer *w, PyObject *s, Py_ssize_t from, Py_ssize_t to) {
#ifdef SIMD_ENCODER
    if (have_sse41) {
        encode_span_sse41(w, s, from, to);
        return;
    }
#endif
    encode_span_with(w, s, from, to, 0);
}

/* Encode one layer; the plain pass (record != 0) also records calls, slots, agent sides and the narrow
 * layer, the phonetic pass checks that it keeps the plain layer's layout. */
static int encode_layer(Layout *l, PyObject *texts, char *out, const uint8_t *table, int record) {
    Writer w = {l, out, out, record && table ? l->narrow : NULL, table, record, 0, 0, 0};
    int64_t chars = 0;
    for (Py_ssize_t k = 0; k < l->ncalls; k++) {
        PyObject *s = PyList_GET_ITEM(texts, k);
        Py_ssize_t len = PyUnicode_GET_LENGTH(s);
        if (k) {
            *w.o++ = SEP;
            if (w.nw) *w.nw++ = SEP;
            chars++;
        }
        if (record) {
            l->call_char[k] = chars;
            l->call_byte[k] = w.o - out;
            l->call_slot[k] = l->nslots;
            if (open_slot(l, w.o - out, chars, k) < 0) goto nomem;
        } else if (l->call_char[k] != chars || l->call_byte[k] != w.o - out ||
                   l->call_char[k + 1] - 1 - chars != len) {
            goto misfit;
        }
        w.call = k;
        w.call_char = chars;
        Py_ssize_t agent = len;
        if (record) agent = l->agent[k] < 0 ? 0 : l->agent[k] > len ? len : l->agent[k];
        encode_span(&w, s, 0, agent);
        if (record) l->agent_byte[k] = (w.o - out) - l->call_byte[k];
        encode_span(&w, s, agent, len);
        if (w.failed) goto nomem;
        chars += len;
    }
    if (record) {
        l->nbytes = w.o - out;
        l->nchars = chars;
        if (reserve_slot(l) < 0) goto nomem;
        l->call_byte[l->ncalls] = l->slot_byte[l->nslots] = l->nbytes + 1;
        l->call_char[l->ncalls] = l->slot_char[l->nslots] = chars + 1;
    } else if (w.o - out != l->nbytes) {
        goto misfit;
    }
    return 0;
misfit:
    PyErr_SetString(PyExc_ValueError, "the phonetic text must keep the plain text's characters and widths");
    return -1;
nomem:
    PyErr_NoMemory();
    return -1;
}

/* Bytes a list of str may take as UTF-8 joined by SEP (an upper bound, plus slack). */
static int64_t capacity(PyObject *texts, Py_ssize_t n, const char *what) {
    int64_t cap = n + 16; /* slack: put_bmp and encode8 store past the end */
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *s = PyList_GET_ITEM(texts, k);
        if (!PyUnicode_Check(s)) {
            PyErr_Format(PyExc_TypeError, "%s must be str", what);
            return -1;
        }
        if (PyUnicode_READY(s) < 0) return -1;
        int kind = PyUnicode_KIND(s);
        cap += (kind == PyUnicode_1BYTE_KIND ? 2 : kind == PyUnicode_2BYTE_KIND ? 3 : 4) * PyUnicode_GET_LENGTH(s);
    }
    return cap;
}

/* UTF-8 lead bytes (characters) in b[lo, hi). */
static inline int64_t count_leads(const uint8_t *b, int64_t lo, int64_t hi) {
    int64_t n = 0;
    for (; lo + 8 <= hi; lo += 8) {
        uint64_t w;
        memcpy(&w, b + lo, 8);
        uint64_t continuation = (w >> 7) & ~(w >> 6) & 0x0101010101010101ULL; /* 10xxxxxx, one bit per byte */
        n += 8 - (int64_t)((continuation * 0x0101010101010101ULL) >> 56);
    }
    for (; lo < hi; lo++) n += (b[lo] & 0xC0) != 0x80;
    return n;
}

static int layout_build(Layout *l, PyObject *texts, PyObject *phons, const uint8_t *table, PyObject *agent) {
    Py_ssize_t n = l->ncalls = PyList_GET_SIZE(texts);
    l->nslots = 0;
    int64_t cap = capacity(texts, n, "call texts");
    int64_t phon_cap = phons != Py_None ? capacity(phons, n, "phonetic texts") : 0;
    if (cap < 0 || phon_cap < 0) return -1;
    Py_buffer view;
    if (PyObject_GetBuffer(agent, &view, PyBUF_SIMPLE) < 0) return -1;
    int bad = view.len != 8 * n;
    if (bad) PyErr_Format(PyExc_ValueError, "agent_chars: %zd bytes, expected %zd", view.len, 8 * n);
    if (!bad && grow(&l->calls, &l->calls_cap, 5 * 8 * (size_t)(n + 1), 0) == 0) {
        l->call_byte = l->calls;
        l->call_char = l->calls + (n + 1);
        l->call_slot = l->calls + 2 * (n + 1);
        l->agent = l->calls + 3 * (n + 1);
        l->agent_byte = l->calls + 4 * (n + 1);
        memcpy(l->agent, view.buf, 8 * n);
    } else {
        bad = 1;
    }
    PyBuffer_Release(&view);
    l->with_phon = phons != Py_None;
    l->with_narrow = table != NULL;
    if (bad || grow(&l->plain, &l->plain_cap, cap, 0) < 0) return -1;
    if (table && grow(&l->narrow, &l->narrow_cap, cap, 0) < 0) return -1;
    if (encode_layer(l, texts, l->plain, table, 1) < 0) return -1;
    if (phons != Py_None) {
        if (grow(&l->phon, &l->phon_cap, phon_cap, 0) < 0) return -1;
        if (encode_layer(l, phons, l->phon, NULL, 0) < 0) return -1;
    }
    return 0;
}

/* Characters before byte offset `pos` (a character boundary) of the UTF-8 layers, counted from the
 * start of its slot. */
static inline int64_t char_at(const Layout *l, Py_ssize_t slot, int64_t pos) {
    return l->slot_char[slot] + count_leads((const uint8_t *)l->plain, l->slot_byte[slot], pos);
}

/* The slot holding `pos`, in a start array of nslots + 1 entries (the last one past every pos).
 * Matches come roughly in end order, so the search gallops forward from the previous hit's slot. */
static inline Py_ssize_t slot_of(const int64_t *starts, Py_ssize_t nslots, Py_ssize_t near, int64_t pos) {
    Py_ssize_t lo = 0, hi = nslots; /* starts[lo] <= pos < starts[hi] */
    if (starts[near] <= pos) {
        lo = near;
        for (Py_ssize_t step = 1; lo + step < nslots; step *= 2) {
            if (starts[lo + step] > pos) {
                hi = lo + step;
                break;
            }
            lo += step;
        }
    }
    while (hi - lo > 1) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (starts[mid] <= pos)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

static inline int is_alnum(uint8_t c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

#define MAX_BACK 64 /* characters a start is looked for before an end (regex_start_pattern's cap) */

/* Leftmost start (character offset) of pattern pid's match ending at `end` (`end` when none is found),
 * within `back` characters and the hit's slot: by the reversed regex over those characters read
 * backwards (F_REVERSED), else by a SOM_LEFTMOST database over them. */
static int find_start(Core *self, const Layout *l, const Raw *r, int64_t end_char, int64_t slot_char,
                      int64_t slot_byte, int64_t *start) {
    hs_database_t *db = db_of(PyList_GET_ITEM(self->starts, r->pid));
    int64_t back = self->back[r->pid] < MAX_BACK ? self->back[r->pid] : MAX_BACK;
    int reversed = self->flags[r->pid] & F_REVERSED;
    StartSearch s = {0, ~0ULL};
    unsigned long long longest = 0;
    char window[4 * MAX_BACK];
    if (r->layer == L_NARROW) {
        int64_t lo = end_char - back > slot_char ? end_char - back : slot_char, n = end_char - lo;
        const char *text = (const char *)l->narrow + lo;
        hs_error_t rc;
        if (reversed) {
            for (int64_t k = 0; k < n; k++) window[k] = text[n - 1 - k];
            rc = hs_scan(db, window, (unsigned)n, 0, self->scratch, on_reversed, &longest);
            *start = end_char - (int64_t)longest;
        } else {
            s.want = (unsigned long long)n;
            rc = hs_scan(db, text, (unsigned)n, 0, self->scratch, on_start, &s);
            *start = s.best == ~0ULL ? end_char : lo + (int64_t)s.best;
        }
        return rc == HS_SUCCESS ? 0 : -1;
    }
    const char *layer = r->layer == L_PHON ? l->phon : l->plain;
    const uint8_t *b = (const uint8_t *)l->plain; /* same widths in both layers */
    int64_t lo = r->end; /* `back` characters before the end, not before the slot */
    for (int64_t k = 0; k < back && lo > slot_byte; k++)
        do lo--;
        while (lo > slot_byte && (b[lo] & 0xC0) == 0x80);
    if (reversed) { /* those characters, last first (each keeps its bytes in order) */
        int64_t n = 0;
        for (int64_t pos = r->end, from; pos > lo; pos = from) {
            for (from = pos - 1; (b[from] & 0xC0) == 0x80; from--) continue;
            memcpy(window + n, layer + from, pos - from);
            n += pos - from;
        }
        if (hs_scan(db, window, (unsigned)n, 0, self->scratch, on_reversed, &longest) != HS_SUCCESS) return -1;
        *start = end_char - count_leads((const uint8_t *)window, 0, (int64_t)longest);
        return 0;
    }
    s.want = (unsigned long long)(r->end - lo);
    if (hs_scan(db, layer + lo, (unsigned)(r->end - lo), 0, self->scratch, on_start, &s) != HS_SUCCESS) return -1;
    *start = s.best == ~0ULL ? end_char : end_char - count_leads(b, lo + (int64_t)s.best, r->end);
    return 0;
}

/* first-only patterns (SINGLEMATCH): one vectored scan per call over its agent side, plain part then
 * phonetic part (one scan per call: Hyperscan's fixed cost per scan is about a microsecond) */
typedef struct {
    RawList *raw;
    int64_t base, head;
} FirstScan;

static int on_first(unsigned int id, unsigned long long from, unsigned long long to, unsigned int flags,
                    void *ctx) {
    (void)from;
    (void)flags;
    FirstScan *f = ctx;
    int64_t t = (int64_t)to;
    return push(f->raw, (int32_t)id, t <= f->head ? L_PLAIN : L_PHON, f->base + (t <= f->head ? t : t - f->head));
}

static int scan_first(Core *self, const Layout *l, RawList *raw) {
    hs_database_t *db = db_of(self->first);
    FirstScan f = {raw, 0, 0};
    for (Py_ssize_t k = 0; k < l->ncalls; k++) {
        int64_t n = l->agent_byte[k];
        if (!n) continue;
        f.base = l->call_byte[k];
        /* the plain part keeps the separator after it, so no match runs on into the phonetic part */
        f.head = n + 1 < l->nbytes - f.base ? n + 1 : l->nbytes - f.base;
        const char *parts[2] = {l->plain + f.base, l->with_phon ? l->phon + f.base : NULL};
        unsigned lengths[2] = {(unsigned)f.head, (unsigned)n};
        hs_error_t rc = hs_scan_vector(db, parts, lengths, l->with_phon ? 2 : 1, 0, self->scratch, on_first, &f);
        if (raw->failed) return -1;
        if (rc != HS_SUCCESS) {
            PyErr_Format(PyExc_RuntimeError, "hs_scan_vector failed (%d)", rc);
            return -1;
        }
    }
    return 0;
}

static PyObject *column(const Hit *hits, Py_ssize_t n, size_t field) {
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * 8);
    if (!out) return NULL;
    int64_t *dst = (int64_t *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) dst[i] = *(const int64_t *)((const char *)&hits[i] + field);
    return out;
}

/* The transcript segment of every kept hit: orders[k][slot - first slot of call k] (-1 past its end). */
static int segments_of(const Layout *l, PyObject *orders, Hit *hits, Py_ssize_t n) {
    Py_ssize_t k = -1;
    Py_buffer view = {0};
    for (Py_ssize_t i = 0; i < n; i++) {
        if (hits[i].call != k) { /* hits are grouped by call */
            if (view.obj) PyBuffer_Release(&view);
            k = hits[i].call;
            if (PyObject_GetBuffer(PyList_GET_ITEM(orders, k), &view, PyBUF_C_CONTIGUOUS) < 0) return -1;
            if (view.itemsize != 8 && view.len) {
                PyBuffer_Release(&view);
                PyErr_SetString(PyExc_TypeError, "segment orders must be int64 arrays");
                return -1;
            }
        }
        int64_t local = hits[i].slot - l->call_slot[k];
        hits[i].slot = local < view.len / 8 ? ((const int64_t *)view.buf)[local] : -1;
    }
    if (view.obj) PyBuffer_Release(&view);
    return 0;
}

/* recall(texts: list[str], phons: list[str] | None, agent_chars: bytes (int64 per call), orders: list)
 * -> (call, pattern, segment, start, end, layer): int64 columns as bytes, rows grouped by call (in scan
 * order within a call); start/end are character offsets in the call's text; `orders` holds each call's
 * transcript index of its segments in text order (an int64 array, empty for a call without segments). */
static PyObject *Core_recall(Core *self, PyObject *args) {
    PyObject *texts, *phons, *agent, *orders;
    if (!PyArg_ParseTuple(args, "O!OOO!", &PyList_Type, &texts, &phons, &agent, &PyList_Type, &orders)) return NULL;
    if (!self->lit_chars) {
        PyErr_SetString(PyExc_RuntimeError, "Core is not initialised");
        return NULL;
    }
    Py_ssize_t ncalls = PyList_GET_SIZE(texts);
    if (PyList_GET_SIZE(orders) != ncalls ||
        (phons != Py_None && (!PyList_Check(phons) || PyList_GET_SIZE(phons) != ncalls))) {
        PyErr_SetString(PyExc_ValueError, "phons (or None) and orders must be lists as long as texts");
        return NULL;
    }
    if (self->phon != Py_None && phons == Py_None && ncalls) {
        PyErr_SetString(PyExc_ValueError, "this pack has phonetic patterns: phons are required");
        return NULL;
    }
    Layout *l = &self->ws;
    RawList *raw = &self->raw;
    raw->n = 0;
    raw->failed = 0;
    const uint8_t *table = self->narrow != Py_None ? self->narrow_table : NULL;
    if (layout_build(l, texts, phons, table, agent) < 0) return NULL;
    struct {
        PyObject *db;
        const char *data;
        int64_t len;
        int layer;
    } scans[3] = {{self->plain, l->plain, l->nbytes, L_PLAIN},
                  {self->phon, l->with_phon ? l->phon : NULL, l->nbytes, L_PHON},
                  {self->narrow, l->with_narrow ? (const char *)l->narrow : NULL, l->nchars, L_NARROW}};
    for (int k = 0; k < 3; k++) {
        if (!db_of(scans[k].db) || !scans[k].data || !scans[k].len) continue;
        raw->layer = scans[k].layer;
        hs_error_t rc = hs_scan(db_of(scans[k].db), scans[k].data, (unsigned)scans[k].len, 0, self->scratch,
                                on_match, raw);
        if (raw->failed) return PyErr_NoMemory();
        if (rc != HS_SUCCESS) return PyErr_Format(PyExc_RuntimeError, "hs_scan failed (%d)", rc);
    }
    if (db_of(self->first) && scan_first(self, l, raw) < 0) return raw->failed ? PyErr_NoMemory() : NULL;
    if (grow(&self->hits, &self->hits_cap, (raw->n + 1) * sizeof(Hit), 0) < 0 ||
        grow(&self->sorted, &self->sorted_cap, (raw->n + 1) * sizeof(Hit), 0) < 0 ||
        grow(&self->per_call, &self->per_call_cap, (ncalls + 1) * 8, 0) < 0)
        return NULL;
    Hit *hits = self->hits, *sorted = self->sorted;
    int64_t *first_call = self->first_call, *per_call = self->per_call;
    memset(per_call, 0, (ncalls + 1) * 8);
    for (Py_ssize_t p = 0; p < self->npat; p++) first_call[p] = -1;
    Py_ssize_t kept = 0, near_byte = 0, near_char = 0;
    const uint8_t *bytes = (const uint8_t *)l->plain;
    for (size_t i = 0; i < raw->n; i++) {
        const Raw *r = &raw->v[i];
        if (r->pid < 0 || r->pid >= self->npat || r->end <= 0) continue;
        uint8_t f = self->flags[r->pid];
        if (r->layer == L_PHON && !(f & F_PHONETIC)) continue; /* plain patterns count in plain text only */
        int64_t end, end_byte = -1;
        Py_ssize_t slot;
        if (r->layer == L_NARROW) {
            end = r->end;
            slot = near_char = slot_of(l->slot_char, l->nslots, near_char, end - 1);
        } else {
            end_byte = r->end;
            slot = near_byte = slot_of(l->slot_byte, l->nslots, near_byte, end_byte - 1);
            end = char_at(l, slot, end_byte);
        }
        int64_t slot_start = l->slot_char[slot], slot_end = l->slot_char[slot + 1] - 1;
        int64_t call = l->slot_call[slot], base = l->call_char[call];
        if (end > slot_end) continue; /* runs past its segment */
        if ((f & F_FIRST_ONLY) && (end - base > l->agent[call] || first_call[r->pid] == call)) continue;
        int64_t start;
        if (f & F_END_ONLY) {
            start = end - 1;
        } else if (db_of(PyList_GET_ITEM(self->starts, r->pid))) {
            if (find_start(self, l, r, end, slot_start, l->slot_byte[slot], &start) < 0)
                return PyErr_Format(PyExc_RuntimeError, "hs_scan failed (start of match)");
        } else {
            start = end - self->lit_chars[r->pid];
        }
        if (end <= start || start < slot_start) continue; /* inside one segment */
        if ((f & (F_BOUND_LEFT | F_BOUND_RIGHT)) && end_byte >= 0) {
            int64_t start_byte = end_byte - self->byte_len[r->pid];
            if ((f & F_BOUND_LEFT) && start_byte > 0 && is_alnum(bytes[start_byte - 1])) continue;
            if ((f & F_BOUND_RIGHT) && end_byte < l->nbytes && is_alnum(bytes[end_byte])) continue;
        }
        if (f & F_FIRST_ONLY) first_call[r->pid] = call; /* one per call and pattern, on the agent side */
        hits[kept++] = (Hit){call, r->pid, slot, start - base, end - base, r->layer == L_PHON ? L_PHON : L_PLAIN};
        per_call[call + 1]++;
    }
    /* group by call, keeping scan order within a call (counting sort) */
    for (Py_ssize_t k = 0; k < ncalls; k++) per_call[k + 1] += per_call[k];
    for (Py_ssize_t i = 0; i < kept; i++) sorted[per_call[hits[i].call]++] = hits[i];
    if (segments_of(l, orders, sorted, kept) < 0) return NULL;
    PyObject *result = PyTuple_New(6);
    if (!result) return NULL;
    size_t fields[6] = {offsetof(Hit, call),  offsetof(Hit, pid), offsetof(Hit, slot),
                        offsetof(Hit, start), offsetof(Hit, end), offsetof(Hit, layer)};
    for (int k = 0; k < 6; k++) {
        PyObject *col = column(sorted, kept, fields[k]);
        if (!col) {
            Py_DECREF(result);
            return NULL;
        }
        PyTuple_SET_ITEM(result, k, col);
    }
    return result;
}

static PyMethodDef Core_methods[] = {
    {"recall", (PyCFunction)Core_recall, METH_VARARGS,
     "recall(texts, phons, agent_chars, orders) -> (call, pattern, segment, start, end, layer) int64 columns"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "callqc.rules._recall.Core",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The recall scan of one compiled pack (databases and per-pattern arrays).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Core_init,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_methods = Core_methods,
};

/* ---------------------------------------------------------------- module */

static struct PyModuleDef recall_module = {
    PyModuleDef_HEAD_INIT, "_recall", "The rule engine's recall scan in C against libhs.", -1, NULL,
};

PyMODINIT_FUNC PyInit__recall(void) {
    if (PyType_Ready(&DatabaseType) < 0 || PyType_Ready(&CoreType) < 0) return NULL;
    PyObject *m = PyModule_Create(&recall_module);
    if (!m) return NULL;
#ifdef SIMD_ENCODER
    have_sse41 = __builtin_cpu_supports("sse4.1");
    build_shuffles();
#endif
    CompileError = PyErr_NewException("callqc.rules._recall.CompileError", PyExc_ValueError, NULL);
    Py_INCREF(&DatabaseType);
    Py_INCREF(&CoreType);
    if (!CompileError || PyModule_AddObject(m, "CompileError", CompileError) < 0 ||
        PyModule_AddObject(m, "Database", (PyObject *)&DatabaseType) < 0 ||
        PyModule_AddObject(m, "Core", (PyObject *)&CoreType) < 0 ||
        PyModule_AddStringConstant(m, "HS_VERSION", hs_version()) < 0 ||
        PyModule_AddIntConstant(m, "FLAG_CASELESS", HS_FLAG_CASELESS) < 0 ||
        PyModule_AddIntConstant(m, "FLAG_UTF8", HS_FLAG_UTF8) < 0 ||
        PyModule_AddIntConstant(m, "FLAG_SINGLEMATCH", HS_FLAG_SINGLEMATCH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
