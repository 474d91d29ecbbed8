// Package examples holds the bundled run specifications, embedded so the demo
// runs from any directory; the same files serve `alignflow run --config` and
// `temporal workflow start --input-file`.
package examples

import _ "embed"

// TinyRun is examples/tiny-run.json: the demo's configuration, a complete
// alignment run sized for a 2-core machine.
//
//go:embed tiny-run.json
var TinyRun []byte
