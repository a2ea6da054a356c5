//go:build race

package charts_test

// raceBuild: the test binary has the race detector, so the controller it
// builds does too (and reuses the race-built packages in the build cache).
const raceBuild = true
