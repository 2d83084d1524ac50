// Package keda checks gonomaly's KEDA setup with KEDA's own code: its Kafka scaler
// (github.com/kedacore/keda/v2/pkg/scalers), built from the trigger metadata of
// deploy/k8s, reads the lag of real consumer groups on a `gonomaly broker` process fed by
// `gonomaly produce` and `gonomaly process`, and the replica counts that follow are
// compared with docs/scaling.md; every ScaledObject and TriggerAuthentication, in the base
// and the rendered overlays, is validated against KEDA's CRD schemas the way the API
// server does it (k8s.io/apiextensions-apiserver), and the built-in kinds against the
// schema client-go ships.
//
// It is its own module because KEDA brings hundreds of modules (every scaler's SDK) that
// must stay out of gonomaly's go.mod; its tests build the gonomaly binary from the main
// module and read the deploy files, never import gonomaly's packages.
package keda
