module bottle-operator.dev/re2check

go 1.22
