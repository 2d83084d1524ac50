package api

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"
)

// Role is what an API key may do.
type Role string

const (
	// RoleRead may call the GET routes.
	RoleRead Role = "read"
	// RoleSubmit may also submit jobs, upload datasets, ingest records and cancel.
	RoleSubmit Role = "submit"
)

// Allows reports whether a key of role r may call a route that needs role need: submit
// implies read.
func (r Role) Allows(need Role) bool { return r == RoleSubmit || r == need }

// Problem types of the access checks.
const (
	TypeUnauthorized = "urn:gonomaly:problem:unauthorized" // no key, or a key the server does not know
	TypeForbidden    = "urn:gonomaly:problem:forbidden"    // a known key whose role does not allow the route
	TypeRateLimited  = "urn:gonomaly:problem:rate-limited" // over Config.RateLimit; Retry-After says when to retry
)

// Key is one API key. Secrets are sent as `Authorization: Bearer <secret>`.
type Key struct {
	Name   string
	Secret string
	Role   Role
}

// Limits on keys: a secret must be long enough not to be guessed and made of the
// characters a Bearer credential may carry (RFC 6750 token68).
const (
	MinSecretLen = 16
	maxSecretLen = 512
	maxKeyName   = 64
)

// ParseKeys reads keys in the form of GONOMALY_API_KEYS: comma-separated entries
// "name:role:secret". Blank entries are skipped. Errors name the entry (1-based) and,
// once known, the key's name — never the secret.
func ParseKeys(s string) ([]Key, error) {
	var keys []Key
	for i, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		where := fmt.Sprintf("entry %d", i+1)
		parts := strings.SplitN(entry, ":", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("%s: want name:role:secret, got %d part(s) separated by ':'", where, len(parts))
		}
		k, err := newKey(parts[0], parts[1], parts[2])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		keys = append(keys, k)
	}
	if err := CheckKeys(keys); err != nil {
		return nil, err
	}
	return keys, nil
}

// ReadKeys reads a key file: one key a line as "name role secret" separated by spaces or
// tabs; blank lines and lines starting with # are skipped. Errors name the line.
func ReadKeys(r io.Reader) ([]Key, error) {
	var keys []Key
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) != 3 {
			return nil, fmt.Errorf("line %d: want \"name role secret\", got %d field(s)", line, len(fields))
		}
		k, err := newKey(fields[0], fields[1], fields[2])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		keys = append(keys, k)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w", line+1, err)
	}
	if err := CheckKeys(keys); err != nil {
		return nil, err
	}
	return keys, nil
}

// LoadKeys reads a key file (see ReadKeys); errors start with the path.
func LoadKeys(path string) ([]Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	keys, err := ReadKeys(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no keys (want one \"name role secret\" a line)", path)
	}
	return keys, nil
}

func newKey(name, role, secret string) (Key, error) {
	k := Key{Name: name, Role: Role(role), Secret: secret}
	if err := k.check(); err != nil {
		return Key{}, err
	}
	return k, nil
}

// check validates one key; messages name the key but never quote its secret.
func (k Key) check() error {
	switch {
	case k.Name == "":
		return errors.New("empty key name")
	case len(k.Name) > maxKeyName:
		return fmt.Errorf("key name is %d characters, want at most %d", len(k.Name), maxKeyName)
	}
	for _, c := range k.Name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._@-", c)) {
			return fmt.Errorf("key name %q: only letters, digits and . _ @ - are allowed", k.Name)
		}
	}
	if k.Role != RoleRead && k.Role != RoleSubmit {
		return fmt.Errorf("key %q: unknown role %q (want read or submit)", k.Name, k.Role)
	}
	if n := len(k.Secret); n < MinSecretLen || n > maxSecretLen {
		return fmt.Errorf("key %q: the secret is %d characters, want %d to %d", k.Name, n, MinSecretLen, maxSecretLen)
	}
	if i := badToken68(k.Secret); i >= 0 {
		return fmt.Errorf("key %q: the secret has a character a Bearer token cannot carry at position %d (allowed: letters, digits and - . _ ~ + /, then = padding)", k.Name, i+1)
	}
	return nil
}

// badToken68 returns the index of the first character of s outside RFC 6750's b64token
// (1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="), or -1.
func badToken68(s string) int {
	padding := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '=' && i > 0:
			padding = true
		case padding:
			return i
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', strings.IndexByte("-._~+/", c) >= 0:
		default:
			return i
		}
	}
	return -1
}

// CheckKeys validates a key set: every key well formed, and no two with the same name
// or secret (a shared secret would make the name, and so the role, ambiguous).
func CheckKeys(keys []Key) error {
	names := map[string]bool{}
	secrets := map[string]string{}
	for _, k := range keys {
		if err := k.check(); err != nil {
			return err
		}
		if names[k.Name] {
			return fmt.Errorf("key %q is defined twice", k.Name)
		}
		names[k.Name] = true
		if other, ok := secrets[k.Secret]; ok {
			return fmt.Errorf("keys %q and %q have the same secret", other, k.Name)
		}
		secrets[k.Secret] = k.Name
	}
	return nil
}

// keyNameKey holds the authenticated key's name in the echo context.
const keyNameKey = "gonomaly.key"

// KeyName is the name of the API key that made the request, or "" when the server has
// no keys (handlers record it, e.g. as a job's submitted_by).
func KeyName(c echo.Context) string {
	name, _ := c.Get(keyNameKey).(string)
	return name
}

// storedKey keeps a digest of the secret: comparing fixed-length digests in constant
// time leaks neither the secret's content nor its length.
type storedKey struct {
	name   string
	role   Role
	digest [sha256.Size]byte
}

type keyring []storedKey

func newKeyring(keys []Key) keyring {
	ring := make(keyring, len(keys))
	for i, k := range keys {
		ring[i] = storedKey{name: k.Name, role: k.Role, digest: sha256.Sum256([]byte(k.Secret))}
	}
	return ring
}

// lookup finds the key of a presented secret. It compares against every key, so the
// time it takes does not say which key (or how many) came close.
func (ring keyring) lookup(secret string) (storedKey, bool) {
	d := sha256.Sum256([]byte(secret))
	found := -1
	for i := range ring {
		if subtle.ConstantTimeCompare(d[:], ring[i].digest[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return storedKey{}, false
	}
	return ring[found], true
}

// bearerToken extracts the credential of an `Authorization: Bearer …` header; the scheme
// is case-insensitive (RFC 9110).
func bearerToken(header string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// require authenticates the request (when the server has keys), checks the key's role
// allows the route, and applies the rate limit of the key (or, without keys, of the
// client address). It hangs on every /api/v1 route; health, readiness and the OpenAPI
// document stay open.
func (s *Server) require(need Role) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			keyName := ""
			if len(s.keys) > 0 {
				key, p := s.authenticate(c)
				if p != nil {
					return p
				}
				if !key.role.Allows(need) {
					return problem(http.StatusForbidden, TypeForbidden, "", "the API key %q has the %s role; %s %s needs the %s role", key.name, key.role, req.Method, c.Path(), need)
				}
				c.Set(keyNameKey, key.name)
				keyName = key.name
			}
			if s.limiter != nil {
				client := "key:" + keyName
				if keyName == "" {
					client = "addr:" + remoteHost(req.RemoteAddr)
				}
				if wait, ok := s.limiter.allow(client, time.Now()); !ok {
					secs := int(math.Ceil(wait.Seconds()))
					c.Response().Header().Set("Retry-After", strconv.Itoa(secs))
					who := "this client address"
					if keyName != "" {
						who = fmt.Sprintf("the API key %q", keyName)
					}
					return problem(http.StatusTooManyRequests, TypeRateLimited, "", "%s is over its rate limit of %g requests/s (bursts of %d); retry after %d s", who, s.cfg.RateLimit, s.cfg.RateBurst, secs)
				}
			}
			return next(c)
		}
	}
}

func (s *Server) authenticate(c echo.Context) (storedKey, *Problem) {
	h := c.Response().Header()
	header := c.Request().Header.Get(echo.HeaderAuthorization)
	if header == "" {
		h.Set(echo.HeaderWWWAuthenticate, `Bearer realm="gonomaly"`)
		return storedKey{}, problem(http.StatusUnauthorized, TypeUnauthorized, "", "missing API key: send it as the header Authorization: Bearer <key>")
	}
	token, ok := bearerToken(header)
	if !ok {
		h.Set(echo.HeaderWWWAuthenticate, `Bearer realm="gonomaly", error="invalid_request"`)
		return storedKey{}, problem(http.StatusUnauthorized, TypeUnauthorized, "", "the Authorization header must be \"Bearer <key>\"")
	}
	key, ok := s.keys.lookup(token)
	if !ok {
		h.Set(echo.HeaderWWWAuthenticate, `Bearer realm="gonomaly", error="invalid_token"`)
		return storedKey{}, problem(http.StatusUnauthorized, TypeUnauthorized, "", "invalid API key")
	}
	return key, nil
}

// remoteHost is the address of the TCP peer. Forwarded headers are not trusted: a client
// could pick any value and so escape its limit.
func remoteHost(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// maxLimiterBuckets bounds the rate limiter's memory when a flood of distinct client
// addresses arrives faster than idle buckets expire.
const maxLimiterBuckets = 100_000

// rateLimiter is one token bucket per client (key or address). A bucket unused for as
// long as it takes to refill completely is indistinguishable from a new one, so it is
// dropped: the map holds only the clients seen recently.
type rateLimiter struct {
	limit      rate.Limit
	burst      int
	idle       time.Duration // time to refill an empty bucket
	sweepEvery time.Duration
	maxBuckets int

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	lim  *rate.Limiter
	last time.Time
}

func newRateLimiter(perSecond float64, burst int) *rateLimiter {
	idle := time.Duration(float64(burst) / perSecond * float64(time.Second))
	return &rateLimiter{
		limit: rate.Limit(perSecond), burst: burst, idle: idle,
		sweepEvery: max(idle, time.Minute), maxBuckets: maxLimiterBuckets,
		buckets: map[string]*bucket{}, lastSweep: time.Now(),
	}
}

// allow takes a token from the client's bucket, or says how long until one is there.
func (l *rateLimiter) allow(client string, now time.Time) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= l.sweepEvery || len(l.buckets) >= l.maxBuckets {
		l.sweep(now)
	}
	b := l.buckets[client]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[client] = b
	}
	b.last = now
	r := b.lim.ReserveN(now, 1)
	if !r.OK() {
		return l.idle, false
	}
	if wait := r.DelayFrom(now); wait > 0 {
		r.CancelAt(now) // a refused request takes no token
		return wait, false
	}
	return 0, true
}

// sweep drops the buckets that have refilled. If a flood still leaves too many, it drops
// arbitrary ones (those clients start again with a full bucket) rather than grow.
func (l *rateLimiter) sweep(now time.Time) {
	l.lastSweep = now
	for id, b := range l.buckets {
		if now.Sub(b.last) >= l.idle {
			delete(l.buckets, id)
		}
	}
	for id := range l.buckets {
		if len(l.buckets) < l.maxBuckets*9/10 {
			break
		}
		delete(l.buckets, id)
	}
}

// size is the number of buckets held.
func (l *rateLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
