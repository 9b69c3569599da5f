//go:build race

package simstore

const raceEnabled = true
