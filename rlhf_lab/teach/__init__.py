"""Teaching: helpers the lessons call, and graded assignments."""
