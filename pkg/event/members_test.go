package event

import (
	"fmt"
	"testing"
)

func TestMembers(t *testing.T) {
	obj := []byte(`{"a":{"b":[1,"},"],"c":"\""},"k\"":"v\\","n":-1.5e3,"t":true,"z":null,"e":{}}`)
	var got []string
	Members(obj, func(key, value []byte) bool {
		got = append(got, string(key)+"="+string(value))
		return true
	})
	want := []string{`"a"={"b":[1,"},"],"c":"\""}`, `"k\""="v\\"`, `"n"=-1.5e3`, `"t"=true`, `"z"=null`, `"e"={}`}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("members\n got %q\nwant %q", got, want)
	}
	n := 0
	Members(obj, func(key, value []byte) bool { n++; return n < 2 })
	if n != 2 {
		t.Errorf("Members went on after fn returned false: %d calls", n)
	}
	Members([]byte(`{}`), func(key, value []byte) bool { t.Error("member in {}"); return true })
}

func TestUnquote(t *testing.T) {
	for _, tc := range []struct {
		lit, want string
		ok        bool
	}{
		{`"plain"`, "plain", true},
		{`""`, "", true},
		{`"a\"b\\c\u00e9\n"`, "a\"b\\cé\n", true},
		{`"\ud83d\ude00"`, "😀", true},
		{`plain`, "", false},
		{`1`, "", false},
	} {
		got, ok := Unquote([]byte(tc.lit))
		if string(got) != tc.want || ok != tc.ok {
			t.Errorf("Unquote(%s) = %q, %v; want %q, %v", tc.lit, got, ok, tc.want, tc.ok)
		}
	}
}
