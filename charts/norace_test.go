//go:build !race

package charts_test

// raceBuild: see race_test.go.
const raceBuild = false
