def test_it_lists_instances_for_an_instructor(instructor_client):
    response = instructor_client.get("/api/lablet-instances")
    assert response.status_code == 200
    assert response.json() == {"lablet_instances": [], "total": 0, "limit": 50, "offset": 0}
