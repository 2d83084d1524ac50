package validate

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

var overlays = []string{"dev", "prod"}

// hashSuffix is what kustomize's ConfigMap generator appends to a name.
var hashSuffix = regexp.MustCompile(`-[a-z0-9]{10}$`)

// scaledObject is KEDA's keda.sh/v1alpha1 ScaledObject, the fields of its CRD schema
// (v2.x) that a Kafka-triggered Deployment can use; strict decoding rejects the rest.
type scaledObject struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		ScaleTargetRef struct {
			APIVersion             string `json:"apiVersion,omitempty"`
			Kind                   string `json:"kind,omitempty"`
			Name                   string `json:"name"`
			EnvSourceContainerName string `json:"envSourceContainerName,omitempty"`
		} `json:"scaleTargetRef"`
		PollingInterval       *int32 `json:"pollingInterval,omitempty"`
		InitialCooldownPeriod *int32 `json:"initialCooldownPeriod,omitempty"`
		CooldownPeriod        *int32 `json:"cooldownPeriod,omitempty"`
		IdleReplicaCount      *int32 `json:"idleReplicaCount,omitempty"`
		MinReplicaCount       *int32 `json:"minReplicaCount,omitempty"`
		MaxReplicaCount       *int32 `json:"maxReplicaCount,omitempty"`
		Advanced              *struct {
			RestoreToOriginalReplicaCount bool `json:"restoreToOriginalReplicaCount,omitempty"`
			HorizontalPodAutoscalerConfig *struct {
				Name     string                                         `json:"name,omitempty"`
				Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
			} `json:"horizontalPodAutoscalerConfig,omitempty"`
		} `json:"advanced,omitempty"`
		Fallback *struct {
			FailureThreshold int32 `json:"failureThreshold"`
			Replicas         int32 `json:"replicas"`
		} `json:"fallback,omitempty"`
		Triggers []struct {
			Type              string            `json:"type"`
			Name              string            `json:"name,omitempty"`
			Metadata          map[string]string `json:"metadata"`
			MetricType        string            `json:"metricType,omitempty"`
			UseCachedMetrics  bool              `json:"useCachedMetrics,omitempty"`
			AuthenticationRef *struct {
				Name string `json:"name"`
				Kind string `json:"kind,omitempty"`
			} `json:"authenticationRef,omitempty"`
		} `json:"triggers"`
	} `json:"spec"`
}

// triggerAuthentication is KEDA's keda.sh/v1alpha1 TriggerAuthentication (secret refs).
type triggerAuthentication struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		SecretTargetRef []struct {
			Parameter string `json:"parameter"`
			Name      string `json:"name"`
			Key       string `json:"key"`
		} `json:"secretTargetRef"`
	} `json:"spec"`
}

// kafkaMetadata are the Kafka scaler's trigger metadata keys (KEDA 2.x).
var kafkaMetadata = map[string]bool{
	"bootstrapServers": true, "bootstrapServersFromEnv": true, "consumerGroup": true, "consumerGroupFromEnv": true,
	"topic": true, "topicFromEnv": true, "partitionLimitation": true, "lagThreshold": true, "activationLagThreshold": true,
	"offsetResetPolicy": true, "allowIdleConsumers": true, "excludePersistentLag": true, "limitToPartitionsWithLag": true,
	"ensureEvenDistributionOfPartitions": true, "scaleToZeroOnInvalidOffset": true, "version": true,
	"sasl": true, "tls": true, "unsafeSsl": true,
}

// kafkaAuthParams are the Kafka scaler's authentication parameters.
var kafkaAuthParams = map[string]bool{"sasl": true, "username": true, "password": true, "tls": true,
	"ca": true, "cert": true, "key": true, "keyPassword": true, "unsafeSsl": true}

// manifests is one built overlay, every resource decoded into its type.
type manifests struct {
	deployments map[string]*appsv1.Deployment
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap // by name before the generator's hash suffix
	secrets     map[string]*corev1.Secret
	pdbs        map[string]*policyv1.PodDisruptionBudget
	hpas        map[string]*autoscalingv2.HorizontalPodAutoscaler
	scaled      map[string]*scaledObject
	triggerAuth map[string]*triggerAuthentication
	namespace   string
}

// build runs kustomize on an overlay as `kubectl kustomize --load-restrictor
// LoadRestrictionsNone` does (the base reads deploy/pipeline.example.yaml, outside it).
func build(t *testing.T, overlay string) manifests {
	t.Helper()
	opts := krusty.MakeDefaultOptions()
	opts.LoadRestrictions = types.LoadRestrictionsNone
	dir, err := filepath.Abs(filepath.Join(root, "deploy/k8s/overlays", overlay))
	if err != nil {
		t.Fatal(err)
	}
	resMap, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", overlay, err)
	}
	m := manifests{deployments: map[string]*appsv1.Deployment{}, services: map[string]*corev1.Service{},
		configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{}, hpas: map[string]*autoscalingv2.HorizontalPodAutoscaler{},
		scaled: map[string]*scaledObject{}, triggerAuth: map[string]*triggerAuthentication{}}
	for _, r := range resMap.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		gvk := r.GetGvk()
		id := fmt.Sprintf("%s %s/%s %s", overlay, gvk.Group, gvk.Kind, r.GetName())
		ns := r.GetNamespace()
		if m.namespace == "" {
			m.namespace = ns
		} else if ns != m.namespace {
			t.Errorf("%s: namespace %q, others are in %q", id, ns, m.namespace)
		}
		decode := func(v any) {
			if err := yaml.UnmarshalStrict(y, v); err != nil {
				t.Errorf("%s: %v", id, err)
			}
		}
		switch gvk.ApiVersion() + " " + gvk.Kind {
		case "apps/v1 Deployment":
			v := &appsv1.Deployment{}
			decode(v)
			m.deployments[v.Name] = v
		case "v1 Service":
			v := &corev1.Service{}
			decode(v)
			m.services[v.Name] = v
		case "v1 ConfigMap":
			v := &corev1.ConfigMap{}
			decode(v)
			m.configMaps[hashSuffix.ReplaceAllString(v.Name, "")] = v
		case "v1 Secret":
			v := &corev1.Secret{}
			decode(v)
			m.secrets[v.Name] = v
		case "policy/v1 PodDisruptionBudget":
			v := &policyv1.PodDisruptionBudget{}
			decode(v)
			m.pdbs[v.Name] = v
		case "autoscaling/v2 HorizontalPodAutoscaler":
			v := &autoscalingv2.HorizontalPodAutoscaler{}
			decode(v)
			m.hpas[v.Name] = v
		case "keda.sh/v1alpha1 ScaledObject":
			v := &scaledObject{}
			decode(v)
			m.scaled[v.Metadata.Name] = v
		case "keda.sh/v1alpha1 TriggerAuthentication":
			v := &triggerAuthentication{}
			decode(v)
			m.triggerAuth[v.Metadata.Name] = v
		default:
			t.Errorf("%s: a kind this test does not validate; add it", id)
		}
	}
	if m.namespace == "" {
		t.Errorf("%s: no namespace", overlay)
	}
	return m
}

func TestKustomizeOverlays(t *testing.T) {
	l := readLayout(t)
	for _, overlay := range overlays {
		t.Run(overlay, func(t *testing.T) {
			m := build(t, overlay)
			env := checkConfig(t, l, m)
			checkDeployments(t, l, m, env)
			checkServices(t, m)
			checkPDBs(t, m)
			checkAutoscaling(t, l, m, env)
		})
	}
}

// checkConfig checks the generated ConfigMaps and returns the process environment.
func checkConfig(t *testing.T, l layout, m manifests) map[string]string {
	spec, ok := m.configMaps["gonomaly-pipeline"]
	if !ok {
		t.Fatal("no gonomaly-pipeline ConfigMap")
	}
	if got, want := spec.Data["pipeline.yaml"], string(readFile(t, "deploy/pipeline.example.yaml")); got != want {
		t.Error("ConfigMap gonomaly-pipeline's pipeline.yaml is not deploy/pipeline.example.yaml")
	}
	envCM, ok := m.configMaps["gonomaly-env"]
	if !ok {
		t.Fatal("no gonomaly-env ConfigMap")
	}
	for k := range envCM.Data {
		if !l.checkEnv(k) {
			t.Errorf("gonomaly-env: %s is no flag's environment fallback", k)
		}
	}
	for _, k := range []string{"GONOMALY_BROKERS", "GONOMALY_PARTITIONS", "GONOMALY_METRICS_ADDR"} {
		if envCM.Data[k] == "" {
			t.Errorf("gonomaly-env: %s missing", k)
		}
	}
	if p := envCM.Data["GONOMALY_PARTITIONS"]; p != "8" {
		t.Errorf("GONOMALY_PARTITIONS = %q; the ScaledObjects and docs/scaling.md assume 8", p)
	}
	return envCM.Data
}

func checkDeployments(t *testing.T, l layout, m manifests, env map[string]string) {
	want := []string{"gonomaly-api", "gonomaly-preprocess", "gonomaly-detect", "gonomaly-ensemble",
		"gonomaly-worker-detect", "gonomaly-worker-ensemble", "gonomaly-worker-preprocess", "gonomaly-worker-train"}
	if got := sortedKeys(m.deployments); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Errorf("Deployments %v, want %v", got, want)
	}
	_, metricsPort, _ := strings.Cut(env["GONOMALY_METRICS_ADDR"], ":")
	for name, d := range m.deployments {
		pod := d.Spec.Template.Spec
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("%s: selector does not match its pod labels (%v)", name, err)
		}
		if g := pod.TerminationGracePeriodSeconds; g == nil || int64(l.shutdown.Seconds()) >= *g {
			t.Errorf("%s: terminationGracePeriodSeconds must exceed the %v shutdown deadline", name, l.shutdown)
		}
		if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
			t.Errorf("%s: pod must run as a non-root user", name)
		}
		if len(pod.Containers) != 1 {
			t.Errorf("%s: %d containers, want 1", name, len(pod.Containers))
			continue
		}
		c := pod.Containers[0]
		if c.Image == "" || (strings.HasSuffix(c.Image, ":latest") && m.namespace == "gonomaly") {
			t.Errorf("%s: image %q (prod pins a tag)", name, c.Image)
		}
		for _, p := range l.checkArgs(c.Args) {
			t.Errorf("%s: %s", name, p)
		}
		checkRole(t, l, name, c.Args)
		if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("%s: container needs readOnlyRootFilesystem, no privilege escalation, all capabilities dropped", name)
		}
		for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, okReq := c.Resources.Requests[res]
			lim, okLim := c.Resources.Limits[res]
			if !okReq || !okLim {
				t.Errorf("%s: %s request and limit required", name, res)
			} else if req.Cmp(lim) > 0 {
				t.Errorf("%s: %s request %s above limit %s", name, res, req.String(), lim.String())
			}
		}
		var port *corev1.ContainerPort
		for i := range c.Ports {
			if c.Ports[i].Name == "metrics" {
				port = &c.Ports[i]
			}
		}
		if port == nil || strconv.Itoa(int(port.ContainerPort)) != metricsPort {
			t.Errorf("%s: a container port named metrics on %s (GONOMALY_METRICS_ADDR) is required", name, metricsPort)
		}
		for probe, want := range map[*corev1.Probe]string{c.ReadinessProbe: "/readyz", c.LivenessProbe: "/healthz"} {
			if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != want || probe.HTTPGet.Port.String() != "metrics" {
				t.Errorf("%s: needs an HTTP probe on %s of the metrics port", name, want)
			}
		}
		checkRefs(t, l, m, name, pod, c)
		if d.Annotations["prometheus.io/scrape"] == "" && d.Spec.Template.Annotations["prometheus.io/port"] != metricsPort {
			t.Errorf("%s: pods must announce their metrics port to Prometheus", name)
		}
	}
}

// checkRole checks that a Deployment runs what its name says.
func checkRole(t *testing.T, l layout, name string, args []string) {
	flag := func(f string) string {
		if i := slices.Index(args, "--"+f); i >= 0 && i+1 < len(args) {
			return args[i+1]
		}
		return ""
	}
	role := strings.TrimPrefix(name, "gonomaly-")
	switch {
	case role == "api":
		if args[0] != "api" {
			t.Errorf("%s: runs %q", name, args[0])
		}
	case strings.HasPrefix(role, "worker-"):
		if args[0] != "worker" || flag("queues") != strings.TrimPrefix(role, "worker-") {
			t.Errorf("%s: must run worker --queues %s", name, strings.TrimPrefix(role, "worker-"))
		}
	default:
		if args[0] != "process" || flag("stage") != role || l.stageInput[role] == "" {
			t.Errorf("%s: must run process --stage %s", name, role)
		}
		if flag("spec") == "" {
			t.Errorf("%s: must read the pipeline spec (--spec)", name)
		}
	}
}

// checkRefs checks that what a pod refers to exists: ConfigMaps, Secrets and their
// keys, the mounted spec file, environment variables the binary reads.
func checkRefs(t *testing.T, l layout, m manifests, name string, pod corev1.PodSpec, c corev1.Container) {
	cmByName := map[string]*corev1.ConfigMap{}
	for _, cm := range m.configMaps {
		cmByName[cm.Name] = cm
	}
	secretHas := func(ref string, key string) bool {
		s, ok := m.secrets[ref]
		if !ok {
			return false
		}
		_, inData := s.Data[key]
		_, inString := s.StringData[key]
		return inData || inString
	}
	for _, e := range c.EnvFrom {
		if e.ConfigMapRef != nil && cmByName[e.ConfigMapRef.Name] == nil {
			t.Errorf("%s: envFrom ConfigMap %s does not exist", name, e.ConfigMapRef.Name)
		}
	}
	for _, e := range c.Env {
		if !l.checkEnv(e.Name) {
			t.Errorf("%s: %s is no flag's environment fallback", name, e.Name)
		}
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && !secretHas(e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key) {
			t.Errorf("%s: env %s refers to a missing Secret key", name, e.Name)
		}
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
		if v.ConfigMap != nil && cmByName[v.ConfigMap.Name] == nil {
			t.Errorf("%s: volume %s: ConfigMap %s does not exist", name, v.Name, v.ConfigMap.Name)
		}
	}
	if i := slices.Index(c.Args, "--spec"); i >= 0 && i+1 < len(c.Args) {
		dir, file := filepath.Split(c.Args[i+1])
		found := false
		for _, vm := range c.VolumeMounts {
			v, ok := volumes[vm.Name]
			if ok && v.ConfigMap != nil && filepath.Clean(vm.MountPath) == filepath.Clean(dir) {
				_, found = cmByName[v.ConfigMap.Name].Data[file]
			}
		}
		if !found {
			t.Errorf("%s: --spec %s is not a mounted ConfigMap key", name, c.Args[i+1])
		}
	}
	for _, vm := range c.VolumeMounts {
		if _, ok := volumes[vm.Name]; !ok {
			t.Errorf("%s: mount of undeclared volume %s", name, vm.Name)
		}
	}
}

// podsOf returns the Deployments whose pods a selector picks.
func podsOf(m manifests, selector map[string]string) []string {
	var names []string
	for name, d := range m.deployments {
		if labels.SelectorFromSet(selector).Matches(labels.Set(d.Spec.Template.Labels)) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

func checkServices(t *testing.T, m manifests) {
	if _, ok := m.services["gonomaly-api"]; !ok {
		t.Error("no gonomaly-api Service")
	}
	if _, ok := m.services["gonomaly-metrics"]; !ok {
		t.Error("no gonomaly-metrics Service")
	}
	for name, s := range m.services {
		targets := podsOf(m, s.Spec.Selector)
		if len(targets) == 0 {
			t.Errorf("Service %s selects no pods", name)
		}
		for _, p := range s.Spec.Ports {
			for _, d := range targets {
				c := m.deployments[d].Spec.Template.Spec.Containers[0]
				if !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool {
					return cp.Name == p.TargetPort.String() || strconv.Itoa(int(cp.ContainerPort)) == p.TargetPort.String()
				}) {
					t.Errorf("Service %s: port %s targets %s, which %s does not expose", name, p.Name, p.TargetPort.String(), d)
				}
			}
		}
	}
}

func checkPDBs(t *testing.T, m manifests) {
	covered := map[string]int{}
	for name, p := range m.pdbs {
		if p.Spec.Selector == nil {
			t.Errorf("PDB %s has no selector", name)
			continue
		}
		if p.Spec.MinAvailable == nil && p.Spec.MaxUnavailable == nil {
			t.Errorf("PDB %s sets neither minAvailable nor maxUnavailable", name)
		}
		for _, d := range podsOf(m, p.Spec.Selector.MatchLabels) {
			covered[d]++
		}
	}
	for name := range m.deployments {
		if covered[name] != 1 {
			t.Errorf("Deployment %s is covered by %d PodDisruptionBudgets, want 1", name, covered[name])
		}
	}
}

func checkAutoscaling(t *testing.T, l layout, m manifests, env map[string]string) {
	partitions, _ := strconv.Atoi(env["GONOMALY_PARTITIONS"])
	scaledTargets := map[string]string{}
	for name, so := range m.scaled {
		s := so.Spec
		target := s.ScaleTargetRef.Name
		if _, ok := m.deployments[target]; !ok {
			t.Errorf("ScaledObject %s: scaleTargetRef %q is not a Deployment", name, target)
			continue
		}
		if other, dup := scaledTargets[target]; dup {
			t.Errorf("ScaledObjects %s and %s both scale %s", name, other, target)
		}
		scaledTargets[target] = name
		if s.ScaleTargetRef.Kind != "" && s.ScaleTargetRef.Kind != "Deployment" {
			t.Errorf("ScaledObject %s: scaleTargetRef kind %s", name, s.ScaleTargetRef.Kind)
		}
		if s.MinReplicaCount == nil || s.MaxReplicaCount == nil || s.PollingInterval == nil || s.CooldownPeriod == nil {
			t.Errorf("ScaledObject %s: set minReplicaCount, maxReplicaCount, pollingInterval and cooldownPeriod", name)
			continue
		}
		if *s.MaxReplicaCount > int32(partitions) || *s.MaxReplicaCount > 8 || *s.MinReplicaCount > *s.MaxReplicaCount || *s.MaxReplicaCount < 1 {
			t.Errorf("ScaledObject %s: replicas %d..%d, want 0 ≤ min ≤ max ≤ %d partitions", name, *s.MinReplicaCount, *s.MaxReplicaCount, partitions)
		}
		if *s.PollingInterval < 5 || *s.PollingInterval > 60 || *s.CooldownPeriod < 60 {
			t.Errorf("ScaledObject %s: pollingInterval %d s (want 5..60), cooldownPeriod %d s (want ≥ 60)", name, *s.PollingInterval, *s.CooldownPeriod)
		}
		if a := s.Advanced; a == nil || a.HorizontalPodAutoscalerConfig == nil || a.HorizontalPodAutoscalerConfig.Behavior == nil ||
			a.HorizontalPodAutoscalerConfig.Behavior.ScaleUp == nil || len(a.HorizontalPodAutoscalerConfig.Behavior.ScaleUp.Policies) == 0 {
			t.Errorf("ScaledObject %s: needs an advanced.horizontalPodAutoscalerConfig.behavior.scaleUp policy", name)
		}
		if len(s.Triggers) != 1 || s.Triggers[0].Type != "kafka" {
			t.Errorf("ScaledObject %s: want one kafka trigger", name)
			continue
		}
		tr := s.Triggers[0]
		md := tr.Metadata
		for k := range md {
			if !kafkaMetadata[k] {
				t.Errorf("ScaledObject %s: %q is not a Kafka scaler metadata key", name, k)
			}
		}
		if md["bootstrapServers"] != env["GONOMALY_BROKERS"] {
			t.Errorf("ScaledObject %s: bootstrapServers %q, the processes use %q", name, md["bootstrapServers"], env["GONOMALY_BROKERS"])
		}
		group, topic := md["consumerGroup"], md["topic"]
		if !l.groups[group] || !l.topics[topic] {
			t.Errorf("ScaledObject %s: group %q / topic %q not in the layout", name, group, topic)
		}
		role := strings.TrimPrefix(target, "gonomaly-")
		wantGroup, wantTopic := l.prefix+l.pipeline+"."+role, l.stageInput[role]
		if q, ok := strings.CutPrefix(role, "worker-"); ok {
			wantGroup, wantTopic = l.prefix+"workers", l.prefix+"jobs."+q
		}
		if group != wantGroup || topic != wantTopic {
			t.Errorf("ScaledObject %s: scales %s on %s/%s, but it consumes %s as %s", name, target, group, topic, wantTopic, wantGroup)
		}
		lag, err1 := strconv.Atoi(md["lagThreshold"])
		act, err2 := strconv.Atoi(md["activationLagThreshold"])
		if err1 != nil || err2 != nil || lag < 1 || act < 0 {
			t.Errorf("ScaledObject %s: lagThreshold %q and activationLagThreshold %q must be integers ≥ 1 and ≥ 0", name, md["lagThreshold"], md["activationLagThreshold"])
		}
		// docs/exactly-once.md: a topic written in transactions shows one marker of lag per
		// partition; it must not keep a replica alive nor wake one.
		if topic != l.stageInput["preprocess"] && !strings.Contains(topic, ".jobs.") && *s.MinReplicaCount == 0 && act < partitions {
			t.Errorf("ScaledObject %s: reads a transactional topic: activationLagThreshold %d < %d partitions with minReplicaCount 0", name, act, partitions)
		}
		if md["offsetResetPolicy"] != "earliest" {
			t.Errorf("ScaledObject %s: offsetResetPolicy must be earliest, as gonomaly's consumers start", name)
		}
		if tr.AuthenticationRef == nil {
			t.Errorf("ScaledObject %s: no authenticationRef", name)
			continue
		}
		ta, ok := m.triggerAuth[tr.AuthenticationRef.Name]
		if !ok {
			t.Errorf("ScaledObject %s: TriggerAuthentication %s does not exist", name, tr.AuthenticationRef.Name)
			continue
		}
		for _, ref := range ta.Spec.SecretTargetRef {
			s, ok := m.secrets[ref.Name]
			_, inData := s.Data[ref.Key]
			_, inString := s.StringData[ref.Key]
			if !ok || !(inData || inString) || !kafkaAuthParams[ref.Parameter] {
				t.Errorf("TriggerAuthentication %s: %s from %s/%s is not a Kafka parameter from an existing Secret key", ta.Metadata.Name, ref.Parameter, ref.Name, ref.Key)
			}
		}
	}
	for name, d := range m.deployments {
		if d.Spec.Replicas != nil {
			t.Errorf("Deployment %s sets replicas, which its autoscaler owns (kubectl apply would reset them)", name)
		}
		if _, ok := scaledTargets[name]; !ok && name != "gonomaly-api" {
			t.Errorf("consumer-group Deployment %s has no ScaledObject", name)
		}
	}
	hpa, ok := m.hpas["gonomaly-api"]
	if !ok || len(m.hpas) != 1 {
		t.Fatalf("want exactly the HorizontalPodAutoscaler gonomaly-api, have %v", sortedKeys(m.hpas))
	}
	if ref := hpa.Spec.ScaleTargetRef; ref.Kind != "Deployment" || m.deployments[ref.Name] == nil || scaledTargets[ref.Name] != "" {
		t.Errorf("HPA gonomaly-api: target %s/%s must be a Deployment no ScaledObject scales", ref.Kind, ref.Name)
	}
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 1 || hpa.Spec.MaxReplicas < *hpa.Spec.MinReplicas {
		t.Error("HPA gonomaly-api: bad replica range")
	}
	var have []string
	for _, mt := range hpa.Spec.Metrics {
		switch {
		case mt.Type == autoscalingv2.ResourceMetricSourceType && mt.Resource != nil:
			have = append(have, string(mt.Resource.Name))
		case mt.Type == autoscalingv2.PodsMetricSourceType && mt.Pods != nil:
			have = append(have, mt.Pods.Metric.Name)
		}
	}
	slices.Sort(have)
	if want := []string{"cpu", "http_requests_per_second", "memory"}; !slices.Equal(have, want) {
		t.Errorf("HPA gonomaly-api metrics %v, want %v", have, want)
	}
	for _, name := range []string{hpa.Spec.ScaleTargetRef.Name} {
		c := m.deployments[name].Spec.Template.Spec.Containers[0]
		if _, ok := c.Resources.Requests[corev1.ResourceMemory]; !ok {
			t.Errorf("%s: utilization targets need requests", name)
		}
	}
}
