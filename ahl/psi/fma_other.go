//go:build !amd64.v3

package psi

// goFusesFMA says that the compiler fuses x*y + z into one FMA instruction (GOAMD64=v3 and
// higher); this build leaves them separate.
const goFusesFMA = false
