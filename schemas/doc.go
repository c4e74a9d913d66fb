// Package schemas holds the contracts that every other seer package shares:
// input event schemas and their decoder, the prediction and dead-letter
// records, the model package manifest (model.yaml) with its reference
// profile, and the embedded ClickHouse migrations.
//
// schemas is the leaf of seer's import graph: it imports no other seer
// package. Its values are immutable after loading and safe for concurrent
// use; the batch type Item is owned by one goroutine at a time.
package schemas
