def total(rows):
    return [sum(row) for row in rows]
