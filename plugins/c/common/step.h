// Helpers for writing step functions in C, over the bindings that the build generates for every
// plugin as plugin.h (wit-bindgen C with the world renamed `plugin`, whatever its WIT name).
//
// Ownership: a step owns its `ctx` (and an error handler its `error` string) and frees them with
// step_context_free / plugin_string_free. The strings it returns (patch, error message) must be
// malloc'd: the generated post-return function frees them. The helpers below do both right.
#ifndef STEPFLOW_C_STEP_H
#define STEPFLOW_C_STEP_H

#include <stdbool.h>

#include "json.h"
#include "plugin.h"

typedef plugin_step_context_t step_context;
typedef plugin_step_error_t step_error;
typedef plugin_option_string_t step_patch_t;

#define step_context_free plugin_step_context_free

// Log levels for step_log.
#define LOG_TRACE STEPFLOW_PLUGIN_HOST_LEVEL_TRACE
#define LOG_DEBUG STEPFLOW_PLUGIN_HOST_LEVEL_DEBUG
#define LOG_INFO STEPFLOW_PLUGIN_HOST_LEVEL_INFO
#define LOG_WARN STEPFLOW_PLUGIN_HOST_LEVEL_WARN
#define LOG_ERROR STEPFLOW_PLUGIN_HOST_LEVEL_ERROR

// Parses the run's data document into `*data` (which points into ctx->data). When it is not
// JSON, sets a fatal error and returns false.
bool step_data(const step_context *ctx, sj_value *data, step_error *err);

// Returns the JSON merge patch in `json` (the buffer is taken) from an action: true.
bool step_patch(step_patch_t *ret, sj_buf *json);

// Sets a retryable or fatal error with a printf-style message: false.
bool step_retryable(step_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool step_fatal(step_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Logs a line through the host, with key/value fields ending in NULL:
//   step_log(LOG_INFO, "fetched a page", "page", "3", NULL);
void step_log(stepflow_plugin_host_level_t level, const char *message, ...);

// `s` (a WIT string) as a NUL-terminated malloc'd copy; free it with free().
char *step_cstr(const plugin_string_t *s);
#endif
