"""Start one Spark session with Delta Lake so Spark's resolver (Ivy) fetches delta-spark's
jars from Maven Central into ~/.ivy2*/jars once, then write and read a one-row table."""

import tempfile

from delta import configure_spark_with_delta_pip
from pyspark.sql import SparkSession

builder = (SparkSession.builder.master("local[1]").appName("lakestream-spark-warmup")
           .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
           .config("spark.sql.catalog.spark_catalog",
                   "org.apache.spark.sql.delta.catalog.DeltaCatalog")
           .config("spark.ui.enabled", "false"))
spark = configure_spark_with_delta_pip(builder).getOrCreate()
with tempfile.TemporaryDirectory() as folder:
    spark.range(1).write.format("delta").save(folder + "/t")
    assert spark.read.format("delta").load(folder + "/t").count() == 1
spark.stop()
print("Spark with Delta Lake works")
