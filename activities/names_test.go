package activities

import (
	"context"
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestNamesAreTheRegisteredActivities holds Names to what the worker
// registers: every exported method of *Activities (RegisterActivity takes
// them all), each an activity (a context first, an error last).
func TestNamesAreTheRegisteredActivities(t *testing.T) {
	typ := reflect.TypeFor[*Activities]()
	var methods []string
	for m := range typ.Methods() {
		methods = append(methods, m.Name)
		ft := m.Type // the receiver is its first argument
		if assert.GreaterOrEqual(t, ft.NumIn(), 2, m.Name) && assert.GreaterOrEqual(t, ft.NumOut(), 1, m.Name) {
			assert.Equal(t, reflect.TypeFor[context.Context](), ft.In(1), "%s takes a context first", m.Name)
			assert.Equal(t, reflect.TypeFor[error](), ft.Out(ft.NumOut()-1), "%s returns an error last", m.Name)
		}
	}
	assert.ElementsMatch(t, methods, Names)
}
