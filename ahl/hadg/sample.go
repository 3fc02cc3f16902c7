// Package hadg builds AHL's heterogeneous anomaly distributions: T tasks, each a support and
// a query set of normals, real anomalies and pseudo anomalies (docs/algorithm.md, "HADG tasks").
package hadg

// Role says which half of a task a sample belongs to.
type Role string

// Roles of task samples.
const (
	Support Role = "support"
	Query   Role = "query"
)

// Kind says what a task sample is.
type Kind string

// Kinds of task samples.
const (
	KindNormal Kind = "normal" // a training normal
	KindSeen   Kind = "seen"   // a real anomaly in the task's virtual seen set
	KindUnseen Kind = "unseen" // a real anomaly in the task's virtual unseen set (query only)
	KindPseudo Kind = "pseudo" // a pseudo anomaly made by Generator from a training normal
)

// Sample is one sample of one task. ID names its feature maps: the image id for normals and
// real anomalies, the pseudo table's id for pseudo anomalies. Label is 0 (normal), 1 (real
// anomaly, seen or virtual unseen) or 2 (pseudo anomaly).
type Sample struct {
	Task      int
	Role      Role
	ID        string
	Label     int
	Kind      Kind
	Generator string // "" unless Kind is KindPseudo
}
