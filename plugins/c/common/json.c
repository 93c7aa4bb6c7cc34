// A small JSON reader and writer: see json.h.
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// serde_json's default nesting limit.
#define SJ_MAX_DEPTH 128

typedef struct {
  const char *s;
  size_t n, i;
  int depth;
  char *err;
  size_t errn;
} parser;

static bool fail(parser *ps, const char *what) {
  if (ps->err && ps->errn) {
    if (ps->i < ps->n)
      snprintf(ps->err, ps->errn, "%s at byte %zu", what, ps->i);
    else
      snprintf(ps->err, ps->errn, "%s at the end of the document", what);
  }
  return false;
}

static void skip_ws(parser *ps) {
  while (ps->i < ps->n) {
    char c = ps->s[ps->i];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
    ps->i++;
  }
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Reads 4 hex digits at s[i..]; -1 if they are not there.
static long hex4(const char *s, size_t n, size_t i) {
  if (i + 4 > n) return -1;
  long v = 0;
  for (size_t k = 0; k < 4; k++) {
    int h = hexval(s[i + k]);
    if (h < 0) return -1;
    v = v * 16 + h;
  }
  return v;
}

// Parses a string starting at the opening quote; leaves ps->i after the closing quote.
static bool parse_string(parser *ps) {
  ps->i++;  // the opening quote
  while (ps->i < ps->n) {
    unsigned char c = (unsigned char)ps->s[ps->i];
    if (c == '"') {
      ps->i++;
      return true;
    }
    if (c < 0x20) return fail(ps, "control character in a string");
    if (c != '\\') {
      ps->i++;
      continue;
    }
    if (ps->i + 1 >= ps->n) break;
    char e = ps->s[ps->i + 1];
    if (e && strchr("\"\\/bfnrt", e)) {
      ps->i += 2;
      continue;
    }
    if (e != 'u') {
      ps->i++;
      return fail(ps, "invalid escape in a string");
    }
    long u = hex4(ps->s, ps->n, ps->i + 2);
    if (u < 0) return fail(ps, "invalid \\u escape in a string");
    ps->i += 6;
    if (u >= 0xDC00 && u <= 0xDFFF) return fail(ps, "lone trailing surrogate in a string");
    if (u >= 0xD800 && u <= 0xDBFF) {
      long lo = -1;
      if (ps->i + 1 < ps->n && ps->s[ps->i] == '\\' && ps->s[ps->i + 1] == 'u')
        lo = hex4(ps->s, ps->n, ps->i + 2);
      if (lo < 0xDC00 || lo > 0xDFFF) return fail(ps, "lone leading surrogate in a string");
      ps->i += 6;
    }
  }
  return fail(ps, "unterminated string");
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static bool parse_number(parser *ps) {
  if (ps->s[ps->i] == '-') ps->i++;
  if (ps->i >= ps->n || !is_digit(ps->s[ps->i])) return fail(ps, "invalid number");
  if (ps->s[ps->i] == '0') {
    ps->i++;
  } else {
    while (ps->i < ps->n && is_digit(ps->s[ps->i])) ps->i++;
  }
  if (ps->i < ps->n && ps->s[ps->i] == '.') {
    ps->i++;
    if (ps->i >= ps->n || !is_digit(ps->s[ps->i])) return fail(ps, "invalid number");
    while (ps->i < ps->n && is_digit(ps->s[ps->i])) ps->i++;
  }
  if (ps->i < ps->n && (ps->s[ps->i] == 'e' || ps->s[ps->i] == 'E')) {
    ps->i++;
    if (ps->i < ps->n && (ps->s[ps->i] == '+' || ps->s[ps->i] == '-')) ps->i++;
    if (ps->i >= ps->n || !is_digit(ps->s[ps->i])) return fail(ps, "invalid number");
    while (ps->i < ps->n && is_digit(ps->s[ps->i])) ps->i++;
  }
  return true;
}

static bool parse_literal(parser *ps, const char *word) {
  size_t len = strlen(word);
  if (ps->n - ps->i < len || memcmp(ps->s + ps->i, word, len) != 0)
    return fail(ps, "expected a value");
  ps->i += len;
  return true;
}

static bool parse_value(parser *ps, sj_value *out);

// Parses an array or an object, with the parser at its opening bracket.
static bool parse_container(parser *ps, bool object) {
  if (++ps->depth >= SJ_MAX_DEPTH) return fail(ps, "nested too deeply");
  char close = object ? '}' : ']';
  ps->i++;
  skip_ws(ps);
  if (ps->i < ps->n && ps->s[ps->i] == close) {
    ps->i++;
    ps->depth--;
    return true;
  }
  for (;;) {
    sj_value v;
    skip_ws(ps);
    if (object) {
      if (ps->i >= ps->n || ps->s[ps->i] != '"') return fail(ps, "expected a string key");
      if (!parse_string(ps)) return false;
      skip_ws(ps);
      if (ps->i >= ps->n || ps->s[ps->i] != ':') return fail(ps, "expected `:`");
      ps->i++;
    }
    if (!parse_value(ps, &v)) return false;
    skip_ws(ps);
    if (ps->i < ps->n && ps->s[ps->i] == ',') {
      ps->i++;
      continue;
    }
    if (ps->i < ps->n && ps->s[ps->i] == close) {
      ps->i++;
      ps->depth--;
      return true;
    }
    return fail(ps, object ? "expected `,` or `}`" : "expected `,` or `]`");
  }
}

static bool parse_value(parser *ps, sj_value *out) {
  skip_ws(ps);
  if (ps->i >= ps->n) return fail(ps, "expected a value");
  size_t start = ps->i;
  bool ok;
  sj_kind kind;
  switch (ps->s[ps->i]) {
    case '{': kind = SJ_OBJECT; ok = parse_container(ps, true); break;
    case '[': kind = SJ_ARRAY; ok = parse_container(ps, false); break;
    case '"': kind = SJ_STRING; ok = parse_string(ps); break;
    case 't': kind = SJ_TRUE; ok = parse_literal(ps, "true"); break;
    case 'f': kind = SJ_FALSE; ok = parse_literal(ps, "false"); break;
    case 'n': kind = SJ_NULL; ok = parse_literal(ps, "null"); break;
    default: kind = SJ_NUMBER; ok = parse_number(ps); break;
  }
  if (!ok) return false;
  out->kind = kind;
  out->p = ps->s + start;
  out->n = ps->i - start;
  return true;
}

bool sj_parse(const char *doc, size_t n, sj_value *root, char *err, size_t errn) {
  parser ps = {doc, n, 0, 0, err, errn};
  if (!parse_value(&ps, root)) return false;
  skip_ws(&ps);
  if (ps.i != n) return fail(&ps, "trailing characters");
  return true;
}

// Appends the UTF-8 encoding of code point `c` to out (if not NULL); returns its length.
static size_t utf8(unsigned long c, char *out) {
  char tmp[4];
  size_t len;
  if (c < 0x80) {
    tmp[0] = (char)c;
    len = 1;
  } else if (c < 0x800) {
    tmp[0] = (char)(0xC0 | (c >> 6));
    tmp[1] = (char)(0x80 | (c & 0x3F));
    len = 2;
  } else if (c < 0x10000) {
    tmp[0] = (char)(0xE0 | (c >> 12));
    tmp[1] = (char)(0x80 | ((c >> 6) & 0x3F));
    tmp[2] = (char)(0x80 | (c & 0x3F));
    len = 3;
  } else {
    tmp[0] = (char)(0xF0 | (c >> 18));
    tmp[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    tmp[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    tmp[3] = (char)(0x80 | (c & 0x3F));
    len = 4;
  }
  if (out) memcpy(out, tmp, len);
  return len;
}

// Decodes the body of a checked JSON string (without its quotes) into out; returns the length.
// The decoded text is never longer than the raw text.
static size_t unescape(const char *s, size_t n, char *out) {
  size_t o = 0;
  for (size_t i = 0; i < n;) {
    if (s[i] != '\\') {
      out[o++] = s[i++];
      continue;
    }
    char e = i + 1 < n ? s[i + 1] : 0;
    i += 2;
    switch (e) {
      case 'b': out[o++] = '\b'; break;
      case 'f': out[o++] = '\f'; break;
      case 'n': out[o++] = '\n'; break;
      case 'r': out[o++] = '\r'; break;
      case 't': out[o++] = '\t'; break;
      case 'u': {
        long u = hex4(s, n, i);
        if (u < 0) return o;  // cannot happen in a checked string
        i += 4;
        unsigned long c = (unsigned long)u;
        if (u >= 0xD800 && u <= 0xDBFF && i + 6 <= n && s[i] == '\\') {
          long lo = hex4(s, n, i + 2);
          if (lo >= 0xDC00 && lo <= 0xDFFF) {
            c = 0x10000 + (((unsigned long)u - 0xD800) << 10) + ((unsigned long)lo - 0xDC00);
            i += 6;
          }
        }
        o += utf8(c, out + o);
        break;
      }
      default: out[o++] = e; break;  // " \ /
    }
  }
  return o;
}

char *sj_string(sj_value v, size_t *len) {
  if (v.kind != SJ_STRING || v.n < 2) return NULL;
  char *out = malloc(v.n - 1);
  if (!out) abort();
  size_t o = unescape(v.p + 1, v.n - 2, out);
  out[o] = 0;
  if (len) *len = o;
  return out;
}

// A parser over the inside of a container value that sj_parse has checked.
static parser inner(sj_value v) {
  parser ps = {v.p, v.n, 1, 0, NULL, 0};
  return ps;
}

sj_value sj_get(sj_value obj, const char *key) {
  sj_value found = {SJ_NONE, NULL, 0};
  if (obj.kind != SJ_OBJECT) return found;
  size_t klen = strlen(key);
  parser ps = inner(obj);
  for (;;) {
    skip_ws(&ps);
    if (ps.i >= ps.n || ps.s[ps.i] != '"') return found;  // `}`
    size_t kstart = ps.i;
    if (!parse_string(&ps)) return found;
    sj_value k = {SJ_STRING, ps.s + kstart, ps.i - kstart};
    skip_ws(&ps);
    ps.i++;  // `:`
    sj_value v;
    if (!parse_value(&ps, &v)) return found;
    // Compare the decoded key; it is never longer than its raw text.
    if (k.n - 2 >= klen) {
      size_t len;
      char *name = sj_string(k, &len);
      if (len == klen && memcmp(name, key, klen) == 0) found = v;
      free(name);
    }
    skip_ws(&ps);
    if (ps.i >= ps.n || ps.s[ps.i] != ',') return found;
    ps.i++;
  }
}

bool sj_next(sj_value arr, size_t *pos, sj_value *elem) {
  if (arr.kind != SJ_ARRAY) return false;
  parser ps = inner(arr);
  if (*pos > ps.i) ps.i = *pos;
  skip_ws(&ps);
  if (ps.i < ps.n && ps.s[ps.i] == ',') ps.i++;
  skip_ws(&ps);
  if (ps.i >= ps.n || ps.s[ps.i] == ']') return false;
  if (!parse_value(&ps, elem)) return false;
  *pos = ps.i;
  return true;
}

bool sj_u64(sj_value v, uint64_t *out) {
  if (v.kind != SJ_NUMBER || v.n == 0) return false;
  uint64_t x = 0;
  for (size_t i = 0; i < v.n; i++) {
    char c = v.p[i];
    if (!is_digit(c)) return false;  // negative, fraction or exponent
    unsigned d = (unsigned)(c - '0');
    if (x > (UINT64_MAX - d) / 10) return false;  // too big for 64 bits
    x = x * 10 + d;
  }
  *out = x;
  return true;
}

uint64_t sj_u64_or(sj_value v, uint64_t dflt) {
  uint64_t x;
  return sj_u64(v, &x) ? x : dflt;
}

bool sj_is_true(sj_value v) { return v.kind == SJ_TRUE; }

void sj_put(sj_buf *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) abort();
    b->p = p;
    b->cap = cap;
  }
  if (n) memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;  // always NUL-terminated, for convenience
}

void sj_puts(sj_buf *b, const char *s) { sj_put(b, s, strlen(s)); }

void sj_put_u64(sj_buf *b, uint64_t v) {
  char tmp[24];
  size_t i = sizeof tmp;
  do {
    tmp[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  sj_put(b, tmp + i, sizeof tmp - i);
}

// Escapes as serde_json does.
void sj_put_str(sj_buf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  sj_put(b, "\"", 1);
  size_t run = 0;  // start of the pending run of bytes that need no escape
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    char esc[6];
    size_t en = 2;
    esc[0] = '\\';
    switch (c) {
      case '"': esc[1] = '"'; break;
      case '\\': esc[1] = '\\'; break;
      case '\b': esc[1] = 'b'; break;
      case '\f': esc[1] = 'f'; break;
      case '\n': esc[1] = 'n'; break;
      case '\r': esc[1] = 'r'; break;
      case '\t': esc[1] = 't'; break;
      default:
        if (c >= 0x20) continue;
        esc[1] = 'u';
        esc[2] = '0';
        esc[3] = '0';
        esc[4] = hex[c >> 4];
        esc[5] = hex[c & 15];
        en = 6;
    }
    sj_put(b, s + run, i - run);
    sj_put(b, esc, en);
    run = i + 1;
  }
  sj_put(b, s + run, n - run);
  sj_put(b, "\"", 1);
}

void sj_put_value(sj_buf *b, sj_value v) {
  if (v.kind == SJ_NONE) {
    sj_puts(b, "null");
    return;
  }
  for (size_t i = 0; i < v.n;) {
    char c = v.p[i];
    if (c == '"') {
      parser ps = {v.p, v.n, i, 0, NULL, 0};
      if (!parse_string(&ps)) return;
      sj_value s = {SJ_STRING, v.p + i, ps.i - i};
      size_t len;
      char *text = sj_string(s, &len);
      sj_put_str(b, text, len);
      free(text);
      i = ps.i;
    } else {
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') sj_put(b, &c, 1);
      i++;
    }
  }
}
