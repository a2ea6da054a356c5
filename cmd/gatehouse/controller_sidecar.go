//go:build sidecar

package main

import (
	"context"
	"fmt"
	"io"
)

// runController is not part of the sidecar build.
func runController(context.Context, []string, func(string) (string, bool), io.Writer, io.Writer) error {
	return fmt.Errorf("%w: this is the sidecar build (gatehouse-sidecar); run the controller with the gatehouse binary of the same image", errUsage)
}

// runWebhookCheck is not part of the sidecar build.
func runWebhookCheck(context.Context, []string, func(string) (string, bool), io.Writer) error {
	return fmt.Errorf("%w: this is the sidecar build (gatehouse-sidecar); run webhook-check with the gatehouse binary of the same image", errUsage)
}

// runStatus is not part of the sidecar build.
func runStatus(context.Context, []string, func(string) (string, bool), io.Writer) error {
	return fmt.Errorf("%w: this is the sidecar build (gatehouse-sidecar); run status with the gatehouse binary", errUsage)
}

// runBroker is not part of the sidecar build.
func runBroker(context.Context, []string, func(string) (string, bool), io.Writer, io.Writer) error {
	return fmt.Errorf("%w: this is the sidecar build (gatehouse-sidecar); run the broker with the gatehouse binary of the same image", errUsage)
}
