/* Native fast path of streamer.encoders.LineEncoder: whole lines of valid UTF-8 to JSON.
 *
 * encode_lines(head, block, start, stop, first, ends_in_newline, templates)
 *     -> (bytes, count)
 *
 * The text is head + block[start:stop] (head: the start of a line held over from earlier
 * chunks; only that one line is ever copied) and holds whole lines:
 * text[:len - ends_in_newline].split(b"\n"). A "\r" right before a "\n" ends a line and
 * is dropped. Each line becomes one object, numbered from
 * `first`, laid out exactly as orjson.dumps of the dict that encoders.parse_line makes,
 * with the templates (bytes) around the values:
 *   head NUMBER ts_open TIMESTAMP lvl_open LEVEL msg_open MESSAGE end      (shaped line)
 *   head NUMBER null_fields LINE end                                       (any other)
 * Bytes that are not UTF-8 become U+FFFD exactly as bytes.decode("utf-8", "replace") makes
 * them: one per maximal subpart of an ill-formed sequence (see `bad_length`).
 * Escaping is orjson's: '"' and '\\' and bytes below 0x20; non-ASCII stays raw.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* 0: copy as is; 1: two-byte escape (ESC2 holds the letter); 2: \u00XX. */
static unsigned char NEEDS[256];
static char ESC2[256];

static void init_tables(void) {
    for (int c = 0; c < 0x20; c++) NEEDS[c] = 2;
    NEEDS['"'] = 1; ESC2['"'] = '"';
    NEEDS['\\'] = 1; ESC2['\\'] = '\\';
    NEEDS['\b'] = 1; ESC2['\b'] = 'b';
    NEEDS['\f'] = 1; ESC2['\f'] = 'f';
    NEEDS['\n'] = 1; ESC2['\n'] = 'n';
    NEEDS['\r'] = 1; ESC2['\r'] = 'r';
    NEEDS['\t'] = 1; ESC2['\t'] = 't';
}

/* 0 when a valid sequence starts at s[i]; else how many bytes CPython's "replace" handler
 * turns into one U+FFFD: the start byte and the continuation bytes that could still have
 * completed it (1 for a byte that can start nothing). The bounds are those of RFC 3629,
 * which rule out overlongs, surrogates and code points above U+10FFFF. */
static Py_ssize_t bad_length(const unsigned char *s, Py_ssize_t i, Py_ssize_t n, Py_ssize_t *size) {
    unsigned char c = s[i];
    Py_ssize_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return 1;
    }
    Py_ssize_t k = 1;
    if (i + 1 >= n || s[i + 1] < lo || s[i + 1] > hi) return 1;
    for (k = 2; k <= need; k++) {
        if (i + k >= n || s[i + k] < 0x80 || s[i + k] > 0xBF) return k;
    }
    *size = need + 1;
    return 0;
}

/* Index of the first byte of an ill-formed sequence, or -1 when all of s is UTF-8. */
static Py_ssize_t invalid_utf8(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t word;
            memcpy(&word, s + i, 8);
            if (!(word & 0x8080808080808080ULL)) {
                i += 8;
                continue;
            }
        }
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        Py_ssize_t size;
        if (bad_length(s, i, n, &size)) return i;
        i += size;
    }
    return -1;
}

typedef struct {
    PyObject *bytes;
    char *start;
    char *at;
    char *limit;
} Out;

static int reserve(Out *out, Py_ssize_t extra) {
    if (out->limit - out->at >= extra) return 0;
    Py_ssize_t used = out->at - out->start;
    Py_ssize_t size = (out->limit - out->start) * 2;
    if (size < used + extra) size = used + extra;
    if (_PyBytes_Resize(&out->bytes, size) < 0) return -1;
    out->start = PyBytes_AS_STRING(out->bytes);
    out->at = out->start + used;
    out->limit = out->start + size;
    return 0;
}

static inline void put(Out *out, const char *data, Py_ssize_t size) {
    memcpy(out->at, data, (size_t)size);
    out->at += size;
}

static inline void put_number(Out *out, unsigned long long value) {
    char digits[24];
    int n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    while (n) *out->at++ = digits[--n];
}

static inline void put_escaped(Out *out, const unsigned char *s, Py_ssize_t n) {
    static const char hex[] = "0123456789abcdef";
    Py_ssize_t run = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (!NEEDS[c]) continue;
        put(out, (const char *)s + run, i - run);
        run = i + 1;
        *out->at++ = '\\';
        if (NEEDS[c] == 1) {
            *out->at++ = ESC2[c];
        } else {
            out->at[0] = 'u';
            out->at[1] = '0';
            out->at[2] = '0';
            out->at[3] = hex[c >> 4];
            out->at[4] = hex[c & 15];
            out->at += 5;
        }
    }
    put(out, (const char *)s + run, n - run);
}

/* put_escaped for a line that is not all UTF-8: also replaces what is ill-formed. */
static void put_escaped_replacing(Out *out, const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n) {
        Py_ssize_t bad = invalid_utf8(s + i, n - i);
        if (bad < 0) {
            put_escaped(out, s + i, n - i);
            return;
        }
        put_escaped(out, s + i, bad);
        i += bad;
        Py_ssize_t size;
        i += bad_length(s, i, n, &size);
        put(out, "\xef\xbf\xbd", 3);
    }
}

#define DIGIT(c) ((unsigned char)((c) - '0') <= 9)

/* Match `<timestamp> [<LEVEL>]` and then the end or " "; set the parts' bounds. */
static int shaped(const unsigned char *s, Py_ssize_t n, Py_ssize_t *ts_end, Py_ssize_t *lvl_end,
                  Py_ssize_t *msg_start) {
    /* 0000-00-00T00:00:00 */
    if (n < 20) return 0;
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    for (int i = 0; i < 19; i++) {
        char want = shape[i];
        unsigned char c = s[i];
        if (want == 'd') {
            if (!DIGIT(c)) return 0;
        } else if (want == 'T') {
            if (c != 'T' && c != 't') return 0;
        } else if (c != (unsigned char)want) {
            return 0;
        }
    }
    Py_ssize_t i = 19;
    if (i < n && s[i] == '.') {
        i++;
        Py_ssize_t digits = i;
        while (i < n && DIGIT(s[i])) i++;
        if (i == digits) return 0;
    }
    if (i >= n) return 0;
    if (s[i] == 'Z' || s[i] == 'z') {
        i++;
    } else if (s[i] == '+' || s[i] == '-') {
        if (i + 6 > n || !DIGIT(s[i + 1]) || !DIGIT(s[i + 2]) || s[i + 3] != ':' ||
            !DIGIT(s[i + 4]) || !DIGIT(s[i + 5]))
            return 0;
        i += 6;
    } else {
        return 0;
    }
    *ts_end = i;
    if (i + 2 > n || s[i] != ' ' || s[i + 1] != '[') return 0;
    i += 2;
    Py_ssize_t letters = i;
    while (i < n && ((s[i] | 0x20) >= 'a' && (s[i] | 0x20) <= 'z')) i++;
    if (i == letters || i >= n || s[i] != ']') return 0;
    *lvl_end = i;
    i++;
    if (i == n) {
        *msg_start = n;
        return 1;
    }
    if (s[i] != ' ') return 0;
    *msg_start = i + 1;
    return 1;
}

enum { HEAD, TS_OPEN, LVL_OPEN, MSG_OPEN, NULL_FIELDS, END };

typedef struct {
    const char *parts[6];
    Py_ssize_t sizes[6];
    Py_ssize_t fixed; /* all the parts and the longest number */
} Templates;

/* One line, its "\n" and line-ending "\r" gone, as one object. */
static int encode_line(Out *out, const Templates *t, const unsigned char *line, Py_ssize_t size,
                       unsigned long long number, int utf8) {
    /* Worst case: every byte becomes \u00XX. */
    if (reserve(out, t->fixed + 6 * size) < 0) return -1;
    put(out, t->parts[HEAD], t->sizes[HEAD]);
    put_number(out, number);
    Py_ssize_t ts_end, lvl_end, msg_start;
    if (shaped(line, size, &ts_end, &lvl_end, &msg_start)) {
        put(out, t->parts[TS_OPEN], t->sizes[TS_OPEN]);
        put(out, (const char *)line, ts_end);
        put(out, t->parts[LVL_OPEN], t->sizes[LVL_OPEN]);
        put(out, (const char *)line + ts_end + 2, lvl_end - ts_end - 2);
        put(out, t->parts[MSG_OPEN], t->sizes[MSG_OPEN]);
        line += msg_start;
        size -= msg_start;
    } else {
        put(out, t->parts[NULL_FIELDS], t->sizes[NULL_FIELDS]);
    }
    if (utf8)
        put_escaped(out, line, size);
    else
        put_escaped_replacing(out, line, size);
    put(out, t->parts[END], t->sizes[END]);
    return 0;
}

static PyObject *encode_lines(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer head, block;
    Py_ssize_t start, stop;
    unsigned long long first;
    int ends_in_newline;
    PyObject *templates;
    if (!PyArg_ParseTuple(args, "y*y*nnKpO!", &head, &block, &start, &stop, &first,
                          &ends_in_newline, &PyTuple_Type, &templates))
        return NULL;
    Templates t;
    t.fixed = 24;
    unsigned char *joined = NULL;
    Out out;
    out.bytes = NULL;
    if (start < 0 || stop > block.len || start > stop) {
        PyErr_SetString(PyExc_ValueError, "start and stop must bound a slice of block");
        goto fail;
    }
    if (PyTuple_GET_SIZE(templates) != 6) {
        PyErr_SetString(PyExc_ValueError, "templates must be 6 bytes objects");
        goto fail;
    }
    for (int k = 0; k < 6; k++) {
        PyObject *item = PyTuple_GET_ITEM(templates, k);
        if (!PyBytes_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "templates must be bytes");
            goto fail;
        }
        t.parts[k] = PyBytes_AS_STRING(item);
        t.sizes[k] = PyBytes_GET_SIZE(item);
        t.fixed += t.sizes[k];
    }

    const unsigned char *s = block.buf;
    Py_ssize_t total = head.len + stop - start;
    /* The text is head + block[start:stop]; its lines: text[:len - ends_in_newline]. */
    Py_ssize_t n = stop - (ends_in_newline && total > 0);
    if (n < start) n = start; /* the final "\n" was head's last byte */
    Py_ssize_t guess = total + total / 2 + 4 * t.fixed;
    out.bytes = PyBytes_FromStringAndSize(NULL, guess);
    if (out.bytes == NULL) goto fail;
    out.start = out.at = PyBytes_AS_STRING(out.bytes);
    out.limit = out.start + guess;
    unsigned long long number = first;

    if (head.len) {
        /* The first line starts in head (a line held over from earlier chunks): join just
         * that line. */
        const unsigned char *nl = memchr(s + start, '\n', (size_t)(n - start));
        Py_ssize_t end = nl ? nl - s : n;
        Py_ssize_t head_len = head.len;
        if (!nl && ends_in_newline && stop == start) head_len--; /* head held the "\n" */
        Py_ssize_t size = head_len + end - start;
        joined = PyMem_Malloc(size ? (size_t)size : 1);
        if (joined == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        memcpy(joined, head.buf, (size_t)head_len);
        memcpy(joined + head_len, s + start, (size_t)(end - start));
        if ((nl || ends_in_newline) && size && joined[size - 1] == '\r') size--;
        if (encode_line(&out, &t, joined, size, number++, invalid_utf8(joined, size) < 0) < 0)
            goto fail;
        if (!nl) goto done;
        start = end + 1;
    }
    /* Most blocks are all UTF-8; only lines of those that are not are checked again. */
    int utf8 = invalid_utf8(s + start, n - start) < 0;
    for (;;) {
        const unsigned char *nl = memchr(s + start, '\n', (size_t)(n - start));
        Py_ssize_t end = nl ? nl - s : n;
        Py_ssize_t line_end = end;
        if ((nl || ends_in_newline) && line_end > start && s[line_end - 1] == '\r') line_end--;
        if (encode_line(&out, &t, s + start, line_end - start, number++, utf8) < 0) goto fail;
        if (!nl) break;
        start = end + 1;
    }
done:
    PyMem_Free(joined);
    PyBuffer_Release(&head);
    PyBuffer_Release(&block);
    if (_PyBytes_Resize(&out.bytes, out.at - out.start) < 0) return NULL;
    return Py_BuildValue("(NK)", out.bytes, number - first);

fail:
    PyMem_Free(joined);
    Py_XDECREF(out.bytes);
    PyBuffer_Release(&head);
    PyBuffer_Release(&block);
    return NULL;
}

static PyMethodDef methods[] = {
    {"encode_lines", encode_lines, METH_VARARGS,
     "encode_lines(head, block, start, stop, first, ends_in_newline, templates) -> (bytes, count)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "streamer._speedups", "Native line-to-JSON encoding.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    init_tables();
    return PyModule_Create(&module);
}
