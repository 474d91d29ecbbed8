package devserver

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	"go.temporal.io/server/common/log"
	"go.temporal.io/server/common/log/tag"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// serverLogger adapts an *slog.Logger to the Temporal server's log.Logger.
// Records below min are dropped, and all records are dropped once silenced
// (before Stop). Fatal and Panic panic with a *fatalError instead of exiting
// the process, so that Start can report them as errors.
type serverLogger struct {
	out      *slog.Logger
	min      slog.Leveler
	silenced *atomic.Bool // shared by the loggers derived with With
	attrs    []slog.Attr
}

var (
	_ log.Logger     = (*serverLogger)(nil)
	_ log.WithLogger = (*serverLogger)(nil)
)

func newServerLogger(out *slog.Logger, minLevel slog.Leveler) *serverLogger {
	return &serverLogger{out: out, min: minLevel, silenced: new(atomic.Bool)}
}

// silence drops every later record, of this logger and those derived from it.
func (l *serverLogger) silence() { l.silenced.Store(true) }

func (l *serverLogger) enabled(level slog.Level) bool {
	return !l.silenced.Load() && level >= l.min.Level() && l.out.Enabled(context.Background(), level)
}

func (l *serverLogger) log(level slog.Level, msg string, tags []tag.Tag) {
	if !l.enabled(level) || quieted(level, msg) {
		return
	}
	attrs := make([]slog.Attr, 0, len(l.attrs)+len(tags))
	attrs = append(attrs, l.attrs...)
	attrs = append(attrs, tagsToAttrs(tags)...)
	l.out.LogAttrs(context.Background(), level, msg, attrs...)
}

// Debug logs at debug level.
func (l *serverLogger) Debug(msg string, tags ...tag.Tag) { l.log(slog.LevelDebug, msg, tags) }

// Info logs at info level.
func (l *serverLogger) Info(msg string, tags ...tag.Tag) { l.log(slog.LevelInfo, msg, tags) }

// Warn logs at warn level.
func (l *serverLogger) Warn(msg string, tags ...tag.Tag) { l.log(slog.LevelWarn, msg, tags) }

// Error logs at error level.
func (l *serverLogger) Error(msg string, tags ...tag.Tag) { l.log(slog.LevelError, msg, tags) }

// DPanic logs at error level (it panics only in development builds of zap).
func (l *serverLogger) DPanic(msg string, tags ...tag.Tag) { l.log(slog.LevelError, msg, tags) }

// Panic panics with a *fatalError carrying msg and tags. It does not log:
// Start returns the error, and an unrecovered panic prints it.
func (l *serverLogger) Panic(msg string, tags ...tag.Tag) { panic(newFatalError(msg, tags)) }

// Fatal panics with a *fatalError instead of exiting the process, so that
// Start can return it as an error. It does not log, like Panic.
func (l *serverLogger) Fatal(msg string, tags ...tag.Tag) { panic(newFatalError(msg, tags)) }

// With returns a logger that adds tags to every record.
func (l *serverLogger) With(tags ...tag.Tag) log.Logger {
	c := *l
	c.attrs = append(append([]slog.Attr(nil), l.attrs...), tagsToAttrs(tags)...)
	return &c
}

// slog returns an *slog.Logger with the same filtering, for the SDK client
// Start uses internally.
func (l *serverLogger) slog() *slog.Logger {
	return slog.New(&filterHandler{inner: l.out.Handler(), l: l})
}

// filterHandler applies serverLogger's level filter to an slog.Handler.
type filterHandler struct {
	inner slog.Handler
	l     *serverLogger
}

func (h *filterHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return !h.l.silenced.Load() && level >= h.l.min.Level() && h.inner.Enabled(ctx, level)
}

func (h *filterHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.inner.Handle(ctx, r)
}

func (h *filterHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &filterHandler{inner: h.inner.WithAttrs(attrs), l: h.l}
}

func (h *filterHandler) WithGroup(name string) slog.Handler {
	return &filterHandler{inner: h.inner.WithGroup(name), l: h.l}
}

// quietedWarnings are prefixes of warnings that are expected from a dev
// server and not worth a user's attention.
var quietedWarnings = []string{
	// No HTTP API port is configured: Nexus HTTP endpoints are off.
	"HTTP API port has not been set",
}

func quieted(level slog.Level, msg string) bool {
	if level != slog.LevelWarn {
		return false
	}
	for _, prefix := range quietedWarnings {
		if strings.HasPrefix(msg, prefix) {
			return true
		}
	}
	return false
}

func tagsToAttrs(tags []tag.Tag) []slog.Attr {
	attrs := make([]slog.Attr, 0, len(tags))
	for _, t := range tags {
		if t == nil {
			continue
		}
		attrs = append(attrs, slog.Any(t.Key(), tagValue(t)))
	}
	return attrs
}

// tagValue returns a tag's value; for an error tag, the error itself rather
// than its text.
func tagValue(t tag.Tag) any {
	if zt, ok := t.(interface{ Field() zap.Field }); ok {
		if f := zt.Field(); f.Type == zapcore.ErrorType {
			if err, ok := f.Interface.(error); ok {
				return err
			}
		}
	}
	return t.Value()
}

// fatalError is what serverLogger.Fatal and Panic panic with.
type fatalError struct {
	msg  string
	tags []tag.Tag
}

func newFatalError(msg string, tags []tag.Tag) *fatalError { return &fatalError{msg: msg, tags: tags} }

func (e *fatalError) Error() string {
	var b strings.Builder
	b.WriteString("temporal server: ")
	b.WriteString(e.msg)
	for _, t := range e.tags {
		if t == nil {
			continue
		}
		fmt.Fprintf(&b, " %s=%v", t.Key(), tagValue(t))
	}
	return b.String()
}

// Unwrap returns the error carried by an "error" tag, if any.
func (e *fatalError) Unwrap() error {
	for _, t := range e.tags {
		if t == nil {
			continue
		}
		if err, ok := tagValue(t).(error); ok {
			return err
		}
	}
	return nil
}
