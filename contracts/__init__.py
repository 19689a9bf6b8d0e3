"""What every stage agrees on, and nothing else: the feature specification, the declared tables and
artifacts (their names, how a published run and model are opened), the typed settings of each stage, the
atomic link switch and the error classes of each boundary.

It imports no stage (``spark_jobs``, ``models``, ``feature_repo``, ``loaders``, ``online``) and none of
their heavy dependencies (Spark, torch, Feast), so every stage can import it.
"""
