// A small, dependency-free JSON reader and writer for step plugins.
//
// Reading: `sj_parse` checks a whole document (strict RFC 8259, nested less than 128 deep, as
// serde_json) and returns its root value; `sj_get` looks up a member of an object, `sj_next`
// walks an array, `sj_u64` reads a non-negative integer. Nothing is copied: a value points into
// the document. A lookup on the wrong kind of value gives a value of kind SJ_NONE, never a crash.
//
// Writing: `sj_buf` is a growable byte buffer (malloc'd, so it can be handed to the host as a
// returned string). Allocation failure aborts, which the host reports as a step error.
#ifndef STEPFLOW_C_JSON_H
#define STEPFLOW_C_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
  SJ_NONE,  // absent: a missing member, or a lookup on a value of the wrong kind
  SJ_NULL,
  SJ_FALSE,
  SJ_TRUE,
  SJ_NUMBER,
  SJ_STRING,
  SJ_ARRAY,
  SJ_OBJECT,
} sj_kind;

// A JSON value: its kind and its text (`p`, `n` bytes) inside the document.
typedef struct {
  sj_kind kind;
  const char *p;
  size_t n;
} sj_value;

// Parses the document `doc` (`n` bytes). On success returns true and sets `*root`; on failure
// returns false and writes a message ("expected `:` at byte 17") to `err` (`errn` bytes).
bool sj_parse(const char *doc, size_t n, sj_value *root, char *err, size_t errn);

// The member `key` of `obj` (the last one if repeated), or SJ_NONE.
sj_value sj_get(sj_value obj, const char *key);

// Walks an array: start with `*pos = 0`; each call sets `*elem` to the next element and returns
// true, or returns false at the end (or when `arr` is not an array).
bool sj_next(sj_value arr, size_t *pos, sj_value *elem);

// True when `v` is a non-negative integer that fits in 64 bits (serde_json's `as_u64`).
bool sj_u64(sj_value v, uint64_t *out);

// `v` as a number, or `dflt` when it is not a non-negative integer.
uint64_t sj_u64_or(sj_value v, uint64_t dflt);

// True when `v` is `true`.
bool sj_is_true(sj_value v);

// Decodes the JSON string `v` into a new NUL-terminated malloc'd buffer (`*len` bytes without
// the NUL, when `len` is not NULL); NULL when `v` is not a string. Free it with free().
char *sj_string(sj_value v, size_t *len);

// A growable byte buffer.
typedef struct {
  char *p;
  size_t n, cap;
} sj_buf;

void sj_put(sj_buf *b, const char *s, size_t n);  // appends n bytes
void sj_puts(sj_buf *b, const char *s);           // appends a C string
void sj_put_u64(sj_buf *b, uint64_t v);           // appends a number
void sj_put_str(sj_buf *b, const char *s, size_t n);  // appends a quoted, escaped JSON string
void sj_put_value(sj_buf *b, sj_value v);         // appends a value's JSON text, compact
#endif
