package activities

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/internal/fixtures"
	"github.com/alignflow/alignflow/model/hf/hftokenizer"
	"github.com/alignflow/alignflow/pipeline"
)

// modelInRoot copies stories260K to root/m, and returns the directory.
func modelInRoot(t *testing.T, root string) string {
	t.Helper()
	dir := filepath.Join(root, "m")
	require.NoError(t, os.CopyFS(dir, os.DirFS(fixtures.Path(t, "models", "stories260K"))))
	return dir
}

// relink replaces dir/name with a symbolic link to target.
func relink(t *testing.T, dir, name, target string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.Remove(p))
	require.NoError(t, os.Symlink(target, p))
	return p
}

// TestPrepareDataReadsModelFilesOnlyInTheRoots: a worker confined to its
// data roots reads every file of model.path through them. A file of the
// directory linked out of the roots (a JSON file as tokenizer_config.json,
// which a run would store and export would write out again; the weights;
// config.json) fails the data stage non-retryably, naming the link and its
// target, with nothing stored; a link that stays in the roots (the Hugging
// Face cache's ../../blobs) is followed.
func TestPrepareDataReadsModelFilesOnlyInTheRoots(t *testing.T) {
	for _, name := range []string{"tokenizer_config.json", "model.safetensors", "config.json", "tokenizer.json"} {
		t.Run(name, func(t *testing.T) {
			root, outside := t.TempDir(), t.TempDir()
			dir := modelInRoot(t, root)
			secret := filepath.Join(outside, name)
			b, err := os.ReadFile(filepath.Join(dir, name))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(secret, b, 0o644)) // a file the model would accept
			link := relink(t, dir, name, secret)

			store, err := artifact.Open(t.TempDir())
			require.NoError(t, err)
			a := New(store)
			a.DataRoots = config.RootsAt(root)
			spec := config.Default()
			spec.Model.Path = dir
			spec.Data.Generate.Prompts = 200
			_, err = a.PrepareData(context.Background(), pipeline.PrepareDataInput{RunID: "x", Spec: spec})
			var app *temporal.ApplicationError
			require.True(t, errors.As(err, &app), "%v", err)
			assert.True(t, app.NonRetryable())
			assert.Equal(t, pipeline.ErrInvalidSpec, app.Type())
			assert.Contains(t, err.Error(), link+" is a symbolic link to "+secret+", outside the worker's data roots ("+root+")")
			assert.Contains(t, err.Error(), "model.path")
			_, err = os.Stat(store.Abs(artifact.Ref{Path: "runs/x/model/" + name}))
			assert.ErrorIs(t, err, os.ErrNotExist, "nothing stored")
		})
	}
	t.Run("a link within the roots", func(t *testing.T) {
		root := t.TempDir()
		dir := modelInRoot(t, root)
		blobs := filepath.Join(root, "blobs")
		require.NoError(t, os.Mkdir(blobs, 0o755))
		require.NoError(t, os.Rename(filepath.Join(dir, "model.safetensors"), filepath.Join(blobs, "407a7c58")))
		require.NoError(t, os.Symlink("../blobs/407a7c58", filepath.Join(dir, "model.safetensors")))
		store, err := artifact.Open(t.TempDir())
		require.NoError(t, err)
		a := New(store)
		a.DataRoots = config.RootsAt(root)
		spec := config.Default()
		spec.Model.Path = dir
		spec.Data.Generate.Prompts = 200
		d, err := a.PrepareData(context.Background(), pipeline.PrepareDataInput{RunID: "x", Spec: spec})
		require.NoError(t, err)
		require.NotNil(t, d.Model)
	})
}

// TestReuseFollowsLinkedModelFiles: the data stage's reuse key hashes what
// a model file's link points to, so a run after the link is pointed at
// another file (of the same size and time, as a copy keeps them) computes
// the stage again instead of reusing what the old target gave.
func TestReuseFollowsLinkedModelFiles(t *testing.T) {
	root := t.TempDir()
	dir := modelInRoot(t, root)
	old := filepath.Join(root, "tokenizer_config.v1.json")
	require.NoError(t, os.Rename(filepath.Join(dir, "tokenizer_config.json"), old))
	b, err := os.ReadFile(old)
	require.NoError(t, err)
	b[len(b)-2] = ' ' // the same size, other bytes (the whitespace before the closing brace)
	changed := filepath.Join(root, "tokenizer_config.v2.json")
	require.NoError(t, os.WriteFile(changed, b, 0o644))
	stamp := time.Unix(1700000000, 0)
	for _, p := range []string{old, changed} {
		require.NoError(t, os.Chtimes(p, stamp, stamp))
	}
	require.NoError(t, os.Symlink(old, filepath.Join(dir, "tokenizer_config.json")))

	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	a := New(store)
	a.DataRoots = config.RootsAt(root)
	spec := config.Default()
	spec.Model.Path = dir
	spec.Data.Generate.Prompts = 200
	ctx := context.Background()
	first, err := a.PrepareData(ctx, pipeline.PrepareDataInput{RunID: "one", Spec: spec})
	require.NoError(t, err)
	again, err := a.PrepareData(ctx, pipeline.PrepareDataInput{RunID: "two", Spec: spec})
	require.NoError(t, err)
	assert.Equal(t, "one", again.ReusedFrom, "the same target: reused")

	relink(t, dir, "tokenizer_config.json", changed)
	third, err := a.PrepareData(ctx, pipeline.PrepareDataInput{RunID: "three", Spec: spec})
	require.NoError(t, err)
	assert.Empty(t, third.ReusedFrom, "the link points at other bytes: computed again")
	assert.NotEqual(t, first.Model.Files["tokenizer_config.json"].SHA256, third.Model.Files["tokenizer_config.json"].SHA256)
	stored, err := store.Get(third.Model.Files["tokenizer_config.json"])
	require.NoError(t, err)
	assert.Equal(t, b, stored, "the new target's bytes are stored")
}

// TestPrepareDataFailsFastOnPoisonInputs: inputs that used to kill the
// worker that read them, one after another as Temporal retried (a chat
// template that asks for 3e9 items or calls itself forever, a tokenizer
// regex that backtracks for years, a small .gz that inflates to one
// gigabyte line), fail the data stage at once, non-retryably, naming the
// file.
func TestPrepareDataFailsFastOnPoisonInputs(t *testing.T) {
	defer func(d time.Duration) { hftokenizer.RegexTimeout = d }(hftokenizer.RegexTimeout)
	hftokenizer.RegexTimeout = 100 * time.Millisecond // the regex below would take years
	pref := func(prompt string) string {
		return fmt.Sprintf(`{"split":"train","prompt":%q,"response_1":"a","response_2":"b","preference_strength":1,"preference_statement":"","preference_elaboration":"","three_most_similar_preferences":[],"all_preferences_unprocessed":[]}`, prompt)
	}
	rating := func(prompt string) string {
		return fmt.Sprintf(`{"prompt":%q,"response":"r","helpfulness":1,"correctness":1,"coherence":1,"complexity":1,"verbosity":1}`, prompt)
	}
	evil := strings.Repeat("a", 64) + "b"
	cases := []struct {
		name    string
		model   map[string]string // files written into a copy of stories260K ("" for the bundled model)
		ratings []byte
		errType string
		want    []string
	}{
		{"a template that asks for three billion items", map[string]string{"chat_template.jinja": `{% for i in range(3000000000) %}{% endfor %}{{ messages[0].content }}`},
			nil, pipeline.ErrInvalidSpec, []string{"chat_template.jinja", "range of 3000000000 items, more than 100000"}},
		{"a template that calls itself", map[string]string{"chat_template.jinja": `{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}`},
			nil, pipeline.ErrInvalidSpec, []string{"chat_template.jinja", "macros call each other more than 64 deep"}},
		{"a tokenizer regex that backtracks", map[string]string{"pre_tokenizer": `{"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated"}`},
			[]byte(rating(evil) + "\n"), pipeline.ErrInvalidSpec, []string{"tokenizer.json", `the regex "(a+)+$" ran past 100ms`}},
		{"a gzip bomb", nil, gzipLine(t, 64<<20), pipeline.ErrInvalidData, []string{"ratings.jsonl.gz:1: line: longer than 16777216 bytes"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			spec := config.Default()
			spec.Data.Generate.Prompts = 200
			if tc.model != nil {
				dir := modelInRoot(t, root)
				for name, content := range tc.model {
					if name == "pre_tokenizer" {
						setPreTokenizer(t, filepath.Join(dir, "tokenizer.json"), content)
						continue
					}
					require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644))
				}
				spec.Model.Path = dir
			}
			if tc.ratings != nil {
				spec.Data.Ratings, spec.Data.Preferences = filepath.Join(root, "ratings.jsonl.gz"), filepath.Join(root, "prefs.jsonl")
				require.NoError(t, os.WriteFile(spec.Data.Ratings, tc.ratings, 0o644))
				require.NoError(t, os.WriteFile(spec.Data.Preferences, []byte(pref("p")+"\n"), 0o644))
			}
			store, err := artifact.Open(t.TempDir())
			require.NoError(t, err)
			a := New(store)
			a.DataRoots = config.RootsAt(root)
			_, err = a.PrepareData(context.Background(), pipeline.PrepareDataInput{RunID: "x", Spec: spec})
			var app *temporal.ApplicationError
			require.True(t, errors.As(err, &app), "%v", err)
			assert.True(t, app.NonRetryable())
			assert.Equal(t, tc.errType, app.Type(), "%v", err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

// gzipLine is a .gz of one line of n bytes: about n/1000 bytes compressed.
func gzipLine(t *testing.T, n int) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	chunk := bytes.Repeat([]byte("a"), 1<<20)
	for ; n > 0; n -= len(chunk) {
		_, err := zw.Write(chunk[:min(n, len(chunk))])
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	return b.Bytes()
}

// setPreTokenizer replaces a tokenizer.json's pre_tokenizer.
func setPreTokenizer(t *testing.T, path, pre string) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var tok map[string]any
	require.NoError(t, json.Unmarshal(b, &tok))
	tok["pre_tokenizer"] = json.RawMessage(pre)
	b, err = json.Marshal(tok)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, b, 0o644))
}
