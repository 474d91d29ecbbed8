package pipeline

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// A run's workflow ID names its folder in the artifact store, runs/<ID>/,
// where its summary, report, metrics and checkpoints live. Whoever starts a
// workflow chooses the ID, so it must be a safe key before it is joined
// into one: path.Join would map "evil/../victim" onto runs/victim (another
// run's records overwritten) and ".." onto the store's top level, and an ID
// with a slash is a folder the scratch space cannot be made in. The rule is
// Temporal's own safe characters, which every object store and file system
// takes as one path segment.

// MaxRunIDLength bounds a run ID in bytes: it is one segment of every key
// of the run, and file systems allow 255 bytes a name (the local store's
// scratch folders and `alignflow report`'s report-<ID> add a few).
const MaxRunIDLength = 200

// RunIDRule says which run IDs are safe keys, for error messages and help.
const RunIDRule = "1 to 200 characters from A-Z, a-z, 0-9, '.', '_' and '-', not starting with '.'"

// ErrUnsafeRunID is what CheckRunID's errors wrap.
var ErrUnsafeRunID = errors.New("unsafe run ID")

// CheckRunID reports whether id can name a run's folder in the store
// (RunIDRule). It depends on the ID alone, so workflow code can call it.
func CheckRunID(id string) error {
	problem := ""
	switch {
	case id == "":
		problem = "is empty"
	case len(id) > MaxRunIDLength:
		problem = fmt.Sprintf("is %d bytes long", len(id))
	case id[0] == '.':
		problem = "starts with '.'"
	default:
		if i := strings.IndexFunc(id, func(c rune) bool { return !runIDChar(c) }); i >= 0 {
			problem = fmt.Sprintf("has %q at byte %d", []rune(id[i:])[0], i)
		}
	}
	if problem == "" {
		return nil
	}
	shown := id
	if len(shown) > 64 {
		shown = shown[:64] + "..."
	}
	return fmt.Errorf("run ID %q %s: it names the run's folder in the artifact store (runs/ID/), so it must be %s: %w",
		shown, problem, RunIDRule, ErrUnsafeRunID)
}

func runIDChar(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// RunKey is the store key of parts under run runID's folder:
// runs/<runID>/<parts...>. It refuses a run ID that is not a safe key
// (CheckRunID), and parts that would leave the folder; every key that holds
// a run ID is made here.
func RunKey(runID string, parts ...string) (string, error) {
	if err := CheckRunID(runID); err != nil {
		return "", err
	}
	dir := "runs/" + runID
	key := path.Join(append([]string{dir}, parts...)...)
	if key != dir && !strings.HasPrefix(key, dir+"/") {
		return "", fmt.Errorf("key %q of run %s leaves the run's folder %s/", path.Join(parts...), runID, dir)
	}
	return key, nil
}

// RunIDPart turns s (a spec's name, say) into a fragment of a run ID, for
// IDs made up from it: each run of characters RunIDRule does not allow
// becomes one '-', and the result is cut to max bytes (a leading '.' stays
// a fragment's problem: callers put it after a prefix).
func RunIDPart(s string, max int) string {
	var b strings.Builder
	dash := false
	for _, c := range s {
		if runIDChar(c) {
			b.WriteRune(c)
			dash = false
		} else if !dash {
			b.WriteByte('-')
			dash = true
		}
	}
	out := b.String()
	if len(out) > max {
		out = out[:max]
	}
	return out
}
