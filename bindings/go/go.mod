module kvfit

go 1.19
