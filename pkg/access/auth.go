package access

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// QueryParam is the query parameter that carries a listener token for
// clients that cannot set headers (a browser's EventSource). It is reserved:
// the server takes it out of the request before anything else reads the
// query, and never logs it.
const QueryParam = "access_token"

// Why a listener was refused. The messages are what the client is told:
// nothing about which part of a token was wrong.
var (
	ErrMissing = errors.New("missing token")
	ErrInvalid = errors.New("invalid token")
)

// Auth decides whether a token lets its holder listen. A nil *Auth lets
// everyone in.
type Auth struct {
	tokens [][sha256.Size]byte // hashed, so comparing takes the same time whatever the lengths
	jwtKey []byte
	parser *jwt.Parser
}

// NewAuth accepts any of tokens and, when jwtKey is not empty, any JWT
// signed with it using HS256 that carries an exp claim and has not expired,
// is not before its nbf, was not issued (iat) more than [MaxClockSkew] in
// the future, and has no crit header.
// It returns nil (everyone may listen) when both are empty.
func NewAuth(tokens []string, jwtKey []byte) *Auth {
	if len(tokens) == 0 && len(jwtKey) == 0 {
		return nil
	}
	a := &Auth{}
	for _, t := range tokens {
		a.tokens = append(a.tokens, sha256.Sum256([]byte(t)))
	}
	if len(jwtKey) > 0 {
		a.jwtKey = jwtKey
		// Only HS256: an attacker must not pick "none", or an RSA/ECDSA
		// method that would treat our secret as a public key.
		a.parser = jwt.NewParser(jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), jwt.WithExpirationRequired())
	}
	return a
}

// Required reports whether listeners need a token.
func (a *Auth) Required() bool { return a != nil }

// Check returns nil when token lets its holder listen, ErrMissing when it
// is empty and otherwise an error that is ErrInvalid (errors.Is) and says
// no more than ErrInvalid; [Reason] tells the server's log why. Static
// tokens are compared in constant time, every one of them each time.
func (a *Auth) Check(token string) error {
	switch {
	case a == nil:
		return nil
	case token == "":
		return ErrMissing
	case a.matchStatic(token):
		return nil
	}
	return a.checkJWT(token)
}

// invalidToken is ErrInvalid with the reason, for the server's log only:
// its message is ErrInvalid's, all the client is told.
type invalidToken struct{ reason string }

func (e *invalidToken) Error() string { return ErrInvalid.Error() }
func (e *invalidToken) Unwrap() error { return ErrInvalid }

// Reason says why Check refused a token, for the server's log: one of a
// fixed set of phrases ("JWT expired", "JWT signature invalid", "JWT
// algorithm none refused"...), never anything taken from the token. It
// returns err's message for other errors, and "" for nil.
func Reason(err error) string {
	var it *invalidToken
	switch {
	case errors.As(err, &it):
		return it.reason
	case err != nil:
		return err.Error()
	}
	return ""
}

func (a *Auth) matchStatic(token string) bool {
	h := sha256.Sum256([]byte(token))
	match := 0
	for i := range a.tokens {
		match |= subtle.ConstantTimeCompare(h[:], a.tokens[i][:])
	}
	return match == 1
}

// MaxClockSkew is how far in the future a JWT's iat may be: the clock of
// whoever signs it may run a little ahead of ours, not an hour.
const MaxClockSkew = time.Minute

var errCrit = errors.New("crit header: no extension is understood")

// checkJWT checks the signature, exp and nbf (the parser), iat, and that
// the header asks for no extension: RFC 7515 (4.1.11) requires refusing a
// token whose crit lists anything the recipient does not implement, and
// this one implements none. It returns nil or an *invalidToken.
func (a *Auth) checkJWT(token string) error {
	switch {
	case a.parser == nil:
		return &invalidToken{"not one of LISTEN_TOKENS (no LISTEN_JWT_SECRET for JWTs)"}
	case strings.Count(token, ".") != 2:
		return &invalidToken{"neither one of LISTEN_TOKENS nor a JWT"}
	}
	var claims jwt.RegisteredClaims
	parsed, err := a.parser.ParseWithClaims(token, &claims, func(t *jwt.Token) (any, error) {
		if _, ok := t.Header["crit"]; ok {
			return nil, errCrit
		}
		return a.jwtKey, nil
	})
	switch {
	case err != nil:
		return &invalidToken{jwtReason(parsed, err)}
	case claims.IssuedAt != nil && claims.IssuedAt.After(time.Now().Add(MaxClockSkew)):
		return &invalidToken{"JWT issued (iat) in the future"}
	}
	return nil
}

// jwtReason names, from a fixed set, why the parser refused a JWT.
func jwtReason(parsed *jwt.Token, err error) string {
	alg := ""
	if parsed != nil && parsed.Method != nil {
		alg = parsed.Method.Alg()
	}
	switch {
	case errors.Is(err, errCrit):
		return "JWT with a crit header"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "JWT malformed"
	case alg == jwt.SigningMethodNone.Alg():
		return "JWT algorithm none refused"
	case errors.Is(err, jwt.ErrTokenUnverifiable), (errors.Is(err, jwt.ErrTokenSignatureInvalid) && alg != jwt.SigningMethodHS256.Alg()):
		return "JWT algorithm not HS256"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "JWT signature invalid (not signed with LISTEN_JWT_SECRET)"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "JWT without exp"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "JWT expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "JWT not valid yet (nbf)"
	}
	return "JWT claims invalid"
}

// BearerToken returns the token of an Authorization header value "Bearer
// <token>" (the scheme in any case). An empty value gives "", true: no
// token; any other scheme, or Bearer without a token, gives false.
func BearerToken(authz string) (string, bool) {
	if authz == "" {
		return "", true
	}
	scheme, t, _ := strings.Cut(authz, " ")
	t = strings.TrimSpace(t)
	if !strings.EqualFold(scheme, "Bearer") || t == "" {
		return "", false
	}
	return t, true
}
