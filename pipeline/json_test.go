package pipeline_test

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/converter"

	"github.com/alignflow/alignflow/pipeline"
)

// boundaryTypes are every struct type of the package, each as a pointer to
// a zero value (StrengthAccuracy and AttributeFit are reward's, aliased
// here, and go through the round trip inside RewardEval).
var boundaryTypes = map[string]func() any{
	"Reused":             func() any { return &pipeline.Reused{} },
	"Data":               func() any { return &pipeline.Data{} },
	"BaseModel":          func() any { return &pipeline.BaseModel{} },
	"PrepareDataInput":   func() any { return &pipeline.PrepareDataInput{} },
	"TrainInput":         func() any { return &pipeline.TrainInput{} },
	"TrainResult":        func() any { return &pipeline.TrainResult{} },
	"RewardEvalInput":    func() any { return &pipeline.RewardEvalInput{} },
	"RewardEval":         func() any { return &pipeline.RewardEval{} },
	"PolicyEvalInput":    func() any { return &pipeline.PolicyEvalInput{} },
	"SampleText":         func() any { return &pipeline.SampleText{} },
	"PolicyEval":         func() any { return &pipeline.PolicyEval{} },
	"IterationInput":     func() any { return &pipeline.IterationInput{} },
	"ShardInput":         func() any { return &pipeline.ShardInput{} },
	"ShardResult":        func() any { return &pipeline.ShardResult{} },
	"UpdateInput":        func() any { return &pipeline.UpdateInput{} },
	"IterationResult":    func() any { return &pipeline.IterationResult{} },
	"Progress":           func() any { return &pipeline.Progress{} },
	"SummaryInput":       func() any { return &pipeline.SummaryInput{} },
	"CurveInput":         func() any { return &pipeline.CurveInput{} },
	"ReportInput":        func() any { return &pipeline.ReportInput{} },
	"ReportPaths":        func() any { return &pipeline.ReportPaths{} },
	"RunReportInput":     func() any { return &pipeline.RunReportInput{} },
	"RunReport":          func() any { return &pipeline.RunReport{} },
	"IterationMetrics":   func() any { return &pipeline.IterationMetrics{} },
	"Summary":            func() any { return &pipeline.Summary{} },
	"StageModel":         func() any { return &pipeline.StageModel{} },
	"RewardModelSummary": func() any { return &pipeline.RewardModelSummary{} },
	"PolicySummary":      func() any { return &pipeline.PolicySummary{} },
	"SamplePair":         func() any { return &pipeline.SamplePair{} },
	"ComparisonReport":   func() any { return &pipeline.ComparisonReport{} },
	"VariantReport":      func() any { return &pipeline.VariantReport{} },
	"RunClaim":           func() any { return &pipeline.RunClaim{} },
	"RolloutRecord":      func() any { return &pipeline.RolloutRecord{} },
	"Sampling":           func() any { return &pipeline.Sampling{} },
}

// TestRoundTripKeepsEveryField sends each type, every field set (nested
// ones too), through the SDK's default data converter, as an activity's
// input or result crosses the boundary: what comes back must equal what
// went, so no field is untagged-away, shadowed by an embedded one, or
// lost to a JSON name two fields share.
func TestRoundTripKeepsEveryField(t *testing.T) {
	require.ElementsMatch(t, slices.Collect(maps.Keys(packageStructs(t))), slices.Collect(maps.Keys(boundaryTypes)),
		"every struct type of the package is listed here")
	dc := converter.GetDefaultDataConverter()
	for name, newValue := range boundaryTypes {
		t.Run(name, func(t *testing.T) {
			in := newValue()
			fill(t, reflect.ValueOf(in).Elem(), new(int))
			p, err := dc.ToPayload(in)
			require.NoError(t, err)
			assert.Equal(t, converter.MetadataEncodingJSON, string(p.Metadata[converter.MetadataEncoding]))
			out := newValue()
			require.NoError(t, dc.FromPayload(p, out))
			assert.Equal(t, in, out)

			// Each JSON name appears once: two fields sharing a name would
			// both vanish from the encoding (encoding/json drops ambiguous ones).
			var raw map[string]json.RawMessage
			require.NoError(t, json.Unmarshal(p.Data, &raw))
			assert.Len(t, raw, countJSONFields(reflect.TypeOf(in).Elem()), "top-level JSON names of %s", name)
		})
	}
}

// countJSONFields counts the JSON members a struct encodes to with every
// field set: its tagged fields, with embedded structs flattened.
func countJSONFields(t reflect.Type) int {
	n := 0
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() || f.Tag.Get("json") == "-" {
			continue
		}
		if f.Anonymous && f.Tag.Get("json") == "" && f.Type.Kind() == reflect.Struct {
			n += countJSONFields(f.Type)
			continue
		}
		n++
	}
	return n
}

// TestJSONNames pins the names of the fields a reader outside Go relies on
// (summary.json, comparison.json, the recorded histories) where the Go name
// differs from the JSON one; TestRecordedPayloads checks the rest against
// real payloads.
func TestJSONNames(t *testing.T) {
	tests := []struct {
		typ   reflect.Type
		field string
		want  string
	}{
		{reflect.TypeFor[pipeline.Reused](), "ReusedFrom", "reused_from_run"},
		{reflect.TypeFor[pipeline.BaseModel](), "DType", "torch_dtype"},
		{reflect.TypeFor[pipeline.TrainResult](), "ResumedFrom", "resumed_from_step"},
		{reflect.TypeFor[pipeline.IterationResult](), "PolicyDigest", "policy_sha256"},
		{reflect.TypeFor[pipeline.Data](), "RewardBench", "rewardbench"},
		{reflect.TypeFor[pipeline.StageModel](), "Digest", "checkpoint_sha256"},
		{reflect.TypeFor[pipeline.StageModel](), "ReusedFrom", "reused_from_run"},
		{reflect.TypeFor[pipeline.Summary](), "Runs", "workflow_runs"},
		{reflect.TypeFor[pipeline.Summary](), "KeepIterations", "keep_iterations"},
		{reflect.TypeFor[pipeline.PolicySummary](), "EndedBefore", "ended_fraction_before"},
		{reflect.TypeFor[pipeline.PolicySummary](), "LengthAfter", "mean_length_after"},
		{reflect.TypeFor[pipeline.ComparisonReport](), "HTMLPath", "html_path"},
	}
	for _, tt := range tests {
		t.Run(tt.typ.Name()+"."+tt.field, func(t *testing.T) {
			assert.Equal(t, tt.want, jsonName(t, tt.typ, tt.field))
		})
	}
}
