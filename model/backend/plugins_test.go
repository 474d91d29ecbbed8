package backend

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSpecCannotNameALibrary: a spec's backend "xla:/abs/path.so" made
// every worker that ran it load that file, outside any data root. A spec
// names a plugin by a plain name only; a path, relative or absolute, or a
// hidden name is refused by its spelling, in every build, and Open refuses
// it before it loads anything.
func TestSpecCannotNameALibrary(t *testing.T) {
	for _, name := range []string{"xla:/tmp/evil.so", "xla:/opt/pjrt/xla_cuda_plugin.so", "xla:../lib/evil.so",
		"xla:lib/evil.so", "xla:.hidden", "xla:cuda,tf32", "xla:cu da", "xla:C:\\\\evil.dll"} {
		err := CheckName(name)
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), "not a plain name", name)
		assert.Contains(t, err.Error(), "--xla-plugin NAME=PATH", name)
		_, err = Open(name, Plugins{"cuda": "/opt/pjrt/cuda.so"})
		assert.ErrorContains(t, err, "not a plain name", name)
	}
}

// TestPluginsAllowOnlyTheirNames: a worker resolves a spec's plugin name
// through its own allow-list; an unknown name is refused with the names it
// allows, and plain "xla" takes the worker's default.
func TestPluginsAllowOnlyTheirNames(t *testing.T) {
	p := Plugins{"cuda": "/opt/pjrt/cuda.so", "rocm": "rocm", "": "/opt/pjrt/default.so"}
	got, err := p.plugin("cuda")
	require.NoError(t, err)
	assert.Equal(t, "/opt/pjrt/cuda.so", got)
	got, err = p.plugin("")
	require.NoError(t, err)
	assert.Equal(t, "/opt/pjrt/default.so", got)
	_, err = p.plugin("tpu")
	assert.ErrorContains(t, err, `this worker allows no XLA plugin named "tpu" (allowed: cuda, rocm;`)
	_, err = Plugins(nil).plugin("tpu")
	assert.ErrorContains(t, err, "allowed: none: start the worker with --xla-plugin tpu=")
	got, err = Plugins(nil).plugin("")
	require.NoError(t, err)
	assert.Empty(t, got, "plain xla without a default: the first plugin GoMLX finds")
	if _, linked := extraBackends[XLA]; !linked {
		_, err = Open("xla:cuda", p)
		assert.ErrorContains(t, err, "-tags xla", "a worker without XLA says how to get it")
	}
}

func TestParsePlugins(t *testing.T) {
	p, err := ParsePlugins(nil)
	require.NoError(t, err)
	assert.Nil(t, p)
	p, err = ParsePlugins([]string{"cuda=/opt/pjrt/cuda.so", "rocm=rocm:tpu=/opt/tpu.so,tf32", "/opt/pjrt/default.so"})
	require.NoError(t, err)
	assert.Equal(t, Plugins{"cuda": "/opt/pjrt/cuda.so", "rocm": "rocm", "tpu": "/opt/tpu.so,tf32", "": "/opt/pjrt/default.so"}, p)
	assert.Equal(t, []string{"cuda", "rocm", "tpu"}, p.Names())
	for value, want := range map[string]string{
		"../x=/opt/x.so":        "not a plain name",
		"cuda=":                 "names no plugin",
		"cuda=lib/cuda.so":      "must be absolute",
		"cuda=/a.so:cuda=/b.so": `plugin "cuda" is given twice`,
		"/a.so:/b.so":           "plain xla's plugin is given twice",
		"=/opt/x.so":            "the plugin name is empty",
	} {
		_, err := ParsePlugins([]string{value})
		assert.ErrorContains(t, err, want, value)
	}
}
