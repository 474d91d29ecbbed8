package helpsteer

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gzipped compresses the pieces, one after another.
func gzipped(t *testing.T, pieces ...[]byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	for _, p := range pieces {
		_, err := zw.Write(p)
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	return b.Bytes()
}

// TestReadBoundsLinesAndDecompressedSize: a small .gz that inflates to one
// enormous line (the attack: 1.3 MB holding a 1.28 GB line) fails once the
// line passes its bound, naming the file and line, before the rest is
// read; a file that inflates past its bound fails likewise; a file at the
// bounds reads. Neither can be skipped with skip_invalid.
func TestReadBoundsLinesAndDecompressedSize(t *testing.T) {
	mib := bytes.Repeat([]byte("a"), 1<<20)
	bomb := make([][]byte, 64) // 64 MiB on one line, past the default 16 MiB
	for i := range bomb {
		bomb[i] = mib
	}
	rows := strings.Repeat(goodRating+"\n", 100)
	cases := []struct {
		name    string
		content []byte
		opts    ReadOptions
		want    string // "" for a clean read
	}{
		{"one huge gzip line", gzipped(t, bomb...), ReadOptions{}, ":1: line: longer than 16777216 bytes"},
		{"a huge line after good rows", gzipped(t, []byte(goodRating+"\n"+goodRating+"\n"), mib, mib), ReadOptions{MaxLineBytes: 1 << 20}, ":3: line: longer than 1048576 bytes"},
		{"a plain huge line", append(bytes.Repeat([]byte("a"), 2<<20), '\n'), ReadOptions{MaxLineBytes: 1 << 20, SkipInvalid: true}, ":1: line: longer than 1048576 bytes"},
		{"inflates past the bound", gzipped(t, []byte(rows)), ReadOptions{MaxBytes: int64(len(rows)) - 1, SkipInvalid: true}, ":100: gzip: decompresses to more than 10499 bytes"},
		{"inflates to the bound", gzipped(t, []byte(rows)), ReadOptions{MaxBytes: int64(len(rows))}, ""},
		{"a line at the bound", []byte(goodRating + "\n"), ReadOptions{MaxLineBytes: len(goodRating) + 1}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ratings.jsonl.gz")
			require.NoError(t, os.WriteFile(path, tc.content, 0o644))
			got, _, err := LoadRatings(path, tc.opts)
			if tc.want == "" {
				require.NoError(t, err)
				assert.NotEmpty(t, got)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), path+tc.want)
			assert.ErrorIs(t, err, ErrTooLarge)
		})
	}
}

// TestReadOpensThroughOptions: the file is opened with ReadOptions.Open
// (a worker's data roots), whose refusal is the load's error.
func TestReadOpensThroughOptions(t *testing.T) {
	refused := errors.New("outside the roots")
	var asked string
	opts := ReadOptions{Open: func(p string) (io.ReadCloser, error) {
		asked = p
		if p == "in.jsonl" {
			return io.NopCloser(strings.NewReader(goodRating + "\n")), nil
		}
		return nil, refused
	}}
	got, _, err := LoadRatings("in.jsonl", opts)
	require.NoError(t, err)
	assert.Len(t, got, 1)
	_, _, err = LoadRatings("out.jsonl", opts)
	assert.ErrorIs(t, err, refused)
	assert.Equal(t, "out.jsonl", asked)
	assert.Contains(t, err.Error(), "out.jsonl:0: file: outside the roots")
}
