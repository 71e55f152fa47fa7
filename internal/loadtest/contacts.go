package loadtest

import (
	"bufio"
	"fmt"
	"io"
	"os"
)

// areaCodes give the generated numbers room: ten thousand 555 numbers each,
// all valid E.164 US numbers as the dispatcher checks them.
var areaCodes = []string{"415", "212", "646", "718", "312", "213", "305", "617", "206", "512"}

// MaxContacts is how many distinct contacts the generator can make: ten
// thousand per area code.
const MaxContacts = 100000

// Contact is one generated contact.
type Contact struct {
	ID, Phone, Name string
}

// Contacts returns n distinct contacts with ids c000001... and numbers
// +1 <area> 555 NNNN.
func Contacts(n int) ([]Contact, error) {
	if n < 0 || n > MaxContacts {
		return nil, fmt.Errorf("contacts: %d: want 0 to %d", n, MaxContacts)
	}
	out := make([]Contact, n)
	for i := range out {
		out[i] = Contact{
			ID:    fmt.Sprintf("c%06d", i+1),
			Phone: fmt.Sprintf("+1%s555%04d", areaCodes[i/10000], i%10000),
			Name:  fmt.Sprintf("Contact %d", i+1),
		}
	}
	return out, nil
}

// WriteCSV writes contacts as the dispatcher's CSV: a header row, then id,
// phone, name.
func WriteCSV(w io.Writer, list []Contact) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, "id,phone,name")
	for _, c := range list {
		fmt.Fprintf(bw, "%s,%s,%s\n", c.ID, c.Phone, c.Name)
	}
	return bw.Flush()
}

func writeContactsFile(path string, n int) ([]Contact, error) {
	list, err := Contacts(n)
	if err != nil {
		return nil, err
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := WriteCSV(f, list); err != nil {
		f.Close()
		return nil, fmt.Errorf("write contacts: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write contacts: %w", err)
	}
	return list, nil
}
