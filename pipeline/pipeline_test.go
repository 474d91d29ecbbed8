package pipeline_test

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/pipeline"
)

func ptr[T any](v T) *T { return &v }

// TestIterationResultMetrics checks that Metrics copies each number to the
// field of the same meaning: the curve a summary plots is built from it, so
// a swapped or forgotten field would plot the wrong thing silently.
func TestIterationResultMetrics(t *testing.T) {
	ref := func(p string) artifact.Ref { return artifact.Ref{Path: p, SHA256: "d-" + p, Bytes: 7} }
	tests := []struct {
		name string
		in   pipeline.IterationResult
		want pipeline.IterationMetrics
	}{
		{
			name: "every number set",
			in: pipeline.IterationResult{
				Reused:    pipeline.Reused{ReusedFrom: "earlier"},
				Iteration: 3, Policy: ref("p"), PolicyDigest: "d-p", Optimizer: ref("o"), Rollouts: ref("r"),
				RewardMean: 2.5, KLMean: 0.125, GoldMean: ptr(1.75), EndedFraction: 0.875, MeanLength: 7.5,
				Loss: -1.25, Seconds: 0.5, WorkerQueue: "own",
			},
			want: pipeline.IterationMetrics{Iteration: 3, RewardMean: 2.5, KLMean: 0.125, GoldMean: ptr(1.75),
				EndedFraction: 0.875, MeanLength: 7.5, Loss: -1.25, Seconds: 0.5},
		},
		{
			name: "no gold rubric",
			in:   pipeline.IterationResult{Iteration: 0, RewardMean: -1, KLMean: 0.5, EndedFraction: 1, Loss: 2, Seconds: 3},
			want: pipeline.IterationMetrics{Iteration: 0, RewardMean: -1, KLMean: 0.5, EndedFraction: 1, Loss: 2, Seconds: 3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.in.Metrics()
			assert.Equal(t, tt.want, got)
			if tt.in.GoldMean != nil {
				assert.Same(t, tt.in.GoldMean, got.GoldMean, "the gold mean is shared, not re-boxed")
			} else {
				assert.Nil(t, got.GoldMean)
			}
		})
	}
}

// TestMetricsCoversEveryField checks that every field of IterationMetrics
// has its namesake in IterationResult and that Metrics copies it: a number
// added to both types but not to Metrics would be dropped from the curve.
func TestMetricsCoversEveryField(t *testing.T) {
	var in pipeline.IterationResult
	fill(t, reflect.ValueOf(&in).Elem(), new(int))
	got := reflect.ValueOf(in.Metrics())
	src := reflect.ValueOf(in)
	for i := range got.NumField() {
		f := got.Type().Field(i)
		s := src.FieldByName(f.Name)
		require.True(t, s.IsValid(), "IterationResult has no field %s", f.Name)
		assert.Equal(t, s.Interface(), got.Field(i).Interface(), f.Name)
		assert.Equal(t, jsonName(t, reflect.TypeFor[pipeline.IterationResult](), f.Name), jsonName(t, got.Type(), f.Name),
			"%s has one JSON name in the curve and in the result", f.Name)
	}
}

// TestModelOf checks the summary's description of a trained model: each of
// a TrainResult's fields goes to its StageModel counterpart (TrainSeconds
// to Seconds, the embedded ReusedFrom to ReusedFrom).
func TestModelOf(t *testing.T) {
	ck := artifact.Ref{Path: "runs/r/sft/policy.safetensors", SHA256: "abc", Bytes: 463144}
	tests := []struct {
		name string
		in   pipeline.TrainResult
		want pipeline.StageModel
	}{
		{
			name: "computed here",
			in: pipeline.TrainResult{Checkpoint: ck, Digest: "abc", Steps: 400, FirstLoss: 5.5, FinalLoss: 0.75,
				TrainSeconds: 31.5, ResumedFrom: 100, ExPOAlpha: 0.25},
			want: pipeline.StageModel{Checkpoint: ck, Digest: "abc", Steps: 400, FirstLoss: 5.5, FinalLoss: 0.75,
				Seconds: 31.5, ResumedFrom: 100},
		},
		{
			name: "reused",
			in:   pipeline.TrainResult{Reused: pipeline.Reused{ReusedFrom: "run-1"}, Checkpoint: ck, Digest: "abc", Steps: 10},
			want: pipeline.StageModel{Checkpoint: ck, Digest: "abc", Steps: 10, ReusedFrom: "run-1"},
		},
		{name: "zero", in: pipeline.TrainResult{}, want: pipeline.StageModel{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, pipeline.ModelOf(tt.in))
		})
	}
}

// TestModelOfSetsEveryField guards against a field added to StageModel that
// ModelOf leaves at zero, from a TrainResult with every field set.
func TestModelOfSetsEveryField(t *testing.T) {
	var in pipeline.TrainResult
	fill(t, reflect.ValueOf(&in).Elem(), new(int))
	got := reflect.ValueOf(pipeline.ModelOf(in))
	for i := range got.NumField() {
		assert.False(t, got.Field(i).IsZero(), "ModelOf leaves StageModel.%s zero", got.Type().Field(i).Name)
	}
}

// reusedResults are every type of the package that embeds Reused, as the
// reuse path (activities.reuse) holds them: a pointer to a decoded zero value.
var reusedResults = map[string]func() any{
	"Data":            func() any { return &pipeline.Data{} },
	"TrainResult":     func() any { return &pipeline.TrainResult{} },
	"RewardEval":      func() any { return &pipeline.RewardEval{} },
	"PolicyEval":      func() any { return &pipeline.PolicyEval{} },
	"ShardResult":     func() any { return &pipeline.ShardResult{} },
	"IterationResult": func() any { return &pipeline.IterationResult{} },
}

// TestMarkReused checks that the reuse path's interface assertion reaches
// the embedded Reused through every result type that has one, and that the
// run ID then travels in the JSON under the name recorded histories use.
func TestMarkReused(t *testing.T) {
	require.ElementsMatch(t, typesEmbedding(t, "Reused"), slices.Collect(maps.Keys(reusedResults)),
		"every type embedding Reused is listed here")
	for name, newResult := range reusedResults {
		t.Run(name, func(t *testing.T) {
			v := newResult()
			m, ok := v.(interface{ MarkReused(string) })
			require.True(t, ok, "*%s does not satisfy interface{ MarkReused(string) }", name)
			m.MarkReused("run-7")
			assert.Equal(t, "run-7", reflect.ValueOf(v).Elem().FieldByName("ReusedFrom").String())

			b, err := json.Marshal(v)
			require.NoError(t, err)
			var raw map[string]any
			require.NoError(t, json.Unmarshal(b, &raw))
			assert.Equal(t, "run-7", raw["reused_from_run"], "flattened into the result, not nested")
			assert.NotContains(t, raw, "Reused")

			// A result computed here says nothing of reuse.
			b, err = json.Marshal(newResult())
			require.NoError(t, err)
			assert.NotContains(t, string(b), "reused_from_run")
		})
	}
}

// TestNonRetryable checks the error types the workflows schedule activities
// with as non-retryable: recorded histories carry these strings, so they
// must not change; StoreUnusable stays out (activities fail with it as a
// non-retryable error themselves).
func TestNonRetryable(t *testing.T) {
	assert.Equal(t, []string{"InvalidSpec", "InvalidData", "Diverged", "CorruptArtifact"}, pipeline.NonRetryable)
	assert.Equal(t, []string{pipeline.ErrInvalidSpec, pipeline.ErrInvalidData, pipeline.ErrDiverged, pipeline.ErrCorruptArtifact},
		pipeline.NonRetryable)
	assert.NotContains(t, pipeline.NonRetryable, pipeline.ErrStoreUnusable)
	assert.Equal(t, "StoreUnusable", pipeline.ErrStoreUnusable)
}

// typesEmbedding lists the package's struct types that embed the named type,
// read from its source so that a new one cannot be missed.
func typesEmbedding(t *testing.T, embedded string) []string {
	t.Helper()
	var out []string
	for name, st := range packageStructs(t) {
		for _, f := range st.Fields.List {
			if id, ok := f.Type.(*ast.Ident); ok && len(f.Names) == 0 && id.Name == embedded {
				out = append(out, name)
			}
		}
	}
	return out
}

// packageStructs are the exported struct types declared in the package's
// (non-test) source files.
func packageStructs(t *testing.T) map[string]*ast.StructType {
	t.Helper()
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	out := map[string]*ast.StructType{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, 0)
		require.NoError(t, err)
		ast.Inspect(f, func(n ast.Node) bool {
			if ts, ok := n.(*ast.TypeSpec); ok && ts.Name.IsExported() {
				if st, ok := ts.Type.(*ast.StructType); ok {
					out[ts.Name.Name] = st
				}
			}
			return true
		})
	}
	require.NotEmpty(t, out)
	return out
}

// jsonName is the name a field has in JSON.
func jsonName(t *testing.T, typ reflect.Type, field string) string {
	t.Helper()
	f, ok := typ.FieldByName(field)
	require.True(t, ok, "%s has no field %s", typ, field)
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	return name
}

// fill sets every exported field reachable from v to a non-zero value,
// numbering the leaves so that no two are alike: a round trip that loses or
// swaps a field then shows.
func fill(t *testing.T, v reflect.Value, n *int) {
	t.Helper()
	*n++
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(t, v.Field(i), n)
			}
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(t, v.Elem(), n)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := range 2 {
			fill(t, s.Index(i), n)
		}
		v.Set(s)
	case reflect.Map:
		require.Equal(t, reflect.String, v.Type().Key().Kind(), "map keys of %s", v.Type())
		m := reflect.MakeMap(v.Type())
		e := reflect.New(v.Type().Elem()).Elem()
		fill(t, e, n)
		m.SetMapIndex(reflect.ValueOf("k"+strings.Repeat("x", *n%7)).Convert(v.Type().Key()), e)
		v.Set(m)
	case reflect.String:
		v.SetString("s" + strings.Repeat("x", *n%13) + string(rune('a'+*n%26)))
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(*n%100 + 1))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(*n%100 + 1))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(float64(*n) + 0.25)
	case reflect.Bool:
		v.SetBool(true)
	default:
		t.Fatalf("fill: unsupported kind %s (%s)", v.Kind(), v.Type())
	}
}
